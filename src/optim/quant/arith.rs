//! The dynamic maps without lookups: the 8-bit AdamW step's hot loop computes each code's
//! value and each value's code with arithmetic, because on CPUs without in-register 256-entry
//! permutes a gather costs more than the whole fp32 AdamW update of the same elements.
//!
//! Values: decade d of a map holds the midpoints of PyTorch's f32 `linspace(0.1, 1, p + 1)`
//! scaled by 10^(d−6) (bitsandbytes' construction, [`super::codes::dynamic_map`]); code j
//! of the decade's positive half (j counted so that its top bit is p) is the midpoint of
//! points k = j − p and k + 1, each point one fused multiply-add from 0.1 up (first half) or
//! from 1.0 down, then `(a + b)·0.5·scale` in f32: the same operations as the map, per lane,
//! with the decade's step and scale from 8-entry tables. [`Arith::derive`] checks every code.
//!
//! Codes: the region of |x| (the zero code with decade 0, decades 1…6, or the code 1.0) comes
//! from a Mitchell log₂ estimate (the float's top bits as an integer) corrected by one
//! comparison with the region's exact first value, found by bisection with the search. Inside
//! a region the boundaries between codes are evenly spaced, so the nearest code is
//! `round(x·scale + offset)` with the line fitted through the region's exact boundaries. Lanes
//! within 2⁻¹¹ of a rounding boundary, non-finite or beyond the table are flagged and take the
//! exact step table. Negative x mirror the positive codes (the signed map is symmetric but for
//! 1.0), with bitsandbytes' sign rule. `tests/optim.rs` compares this with the step table for
//! every f32.

use super::codes::{CODES, CodeMap, MAX_PREFIX};

/// Distance from a rounding boundary (in code units) below which a lane takes the step table:
/// the arithmetic's error is under 1e-4 code units, the boundaries' own rounding similar.
pub(crate) const NEAR: f32 = 0.5 - 1.0 / 2048.0;
/// Largest |x| handled without the table: the end of the step table's range (1.0078125).
pub(crate) const LIMIT: f32 = f32::from_bits((MAX_PREFIX + 1) << 16);

/// Region estimate from t = the float's top 12 bits (sign, exponent, 3 mantissa bits):
/// `((t − C)₊ · M) >> 16`, one region per 3.1 binades with the first step at 2^−16.5
/// (between decades 1 and 2's first values); checked against the exact region starts.
const ESTIMATE_C: u32 = 859;
const ESTIMATE_M: u32 = 2643;

/// Constants of one map's arithmetic form; all tables have eight entries, for `vpermps`.
#[derive(Debug, Clone)]
pub(crate) struct Arith {
    /// j = code − `j_offset` (signed: distance from the zero code; unsigned: code + 1).
    pub j_offset: i32,
    /// j of the zero code (whose value is masked to 0).
    pub zero_j: f32,
    /// By the low three exponent bits of j as f32: the decade's linspace step, its scale
    /// 10^(d−6) and its first point (0.1; 1.0 with step 0 for the code 1.0).
    pub step: [f32; 8],
    pub dscale: [f32; 8],
    pub first: [f32; 8],
    /// `start[a]` = the first x of region a + 1 (∞ for a = 7).
    pub start: [f32; 8],
    /// Per region: s = x·scale + offset puts the region's code boundaries at half-integers.
    pub scale: [f32; 8],
    pub offset: [f32; 8],
    /// Per region: its last code.
    pub hi: [f32; 8],
}

/// The map's decades: (first code of the positive half, number of codes) for d = 0..6.
fn decades(signed: bool) -> [(usize, usize); 7] {
    std::array::from_fn(|d| {
        if signed {
            (127 + (1 << d), 1 << d)
        } else {
            ((2 << d) - 1, 2 << d)
        }
    })
}

impl Arith {
    /// The constants for `map`, or `None` when any check fails (then the table is used).
    pub(crate) fn derive(map: &CodeMap) -> Option<Arith> {
        let signed = map.signed;
        let (j_offset, zero_j) = if signed { (127, 0.0) } else { (-1, 1.0) };
        let decades = decades(signed);
        let one = CODES - 1;
        // Per decade (indexed like the vector code, by j's exponent bits): step, scale, start.
        let (mut step, mut dscale, mut first) = ([0f32; 8], [0f32; 8], [1f32; 8]);
        let slot = |j: i32| (((j as f32).to_bits() >> 23) & 7) as usize;
        for (d, &(code, count)) in decades.iter().enumerate() {
            let e = slot(code as i32 - j_offset);
            step[e] = (1.0f32 - 0.1) / count as f32;
            dscale[e] = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][d] as f32;
            first[e] = 0.1;
        }
        let e = slot(one as i32 - j_offset);
        (step[e], dscale[e], first[e]) = (0.0, 1.0, 1.0);
        let mut ar = Arith {
            j_offset,
            zero_j,
            step,
            dscale,
            first,
            start: [f32::INFINITY; 8],
            scale: [0.0; 8],
            offset: [0.0; 8],
            hi: [0.0; 8],
        };
        for code in 0..CODES {
            if ar.value(code as u8).to_bits() != map.codes[code].to_bits() {
                return None;
            }
        }
        // Regions by code: the zero code with decade 0, decades 1..6, the code 1.0.
        let zero = map.zero_code() as usize;
        let mut regions = [(0, 0); 8];
        regions[0] = (zero, decades[0].0 + decades[0].1 - 1);
        for d in 1..7 {
            regions[d] = (decades[d].0, decades[d].0 + decades[d].1 - 1);
        }
        regions[7] = (one, one);
        for (r, &(lo, hi)) in regions.iter().enumerate() {
            // Boundaries: the first x of each code after the region's first.
            let b: Vec<f64> = (lo + 1..=hi).map(|c| first_x(map, c) as f64).collect();
            let (lo_f, hi_f) = (lo as f64, hi as f64);
            let scale = match b.len() {
                0 => 0.0,
                1 => 1.0 / ar.spacing_of(hi) as f64, // one boundary: its decade's slope
                n => (n - 1) as f64 / (b[n - 1] - b[0]),
            };
            let offset = if b.is_empty() {
                lo_f
            } else {
                lo_f + 0.5 - b[0] * scale
            };
            (ar.scale[r], ar.offset[r], ar.hi[r]) = (scale as f32, offset as f32, hi_f as f32);
            // Every boundary sits within a fifth of the margin of its half-integer.
            let s = |x: f32| x.mul_add(ar.scale[r], ar.offset[r]);
            for (c, &x) in (lo + 1..).zip(&b) {
                if (s(x as f32) - (c as f32 - 0.5)).abs() > (0.5 - NEAR) / 5.0 {
                    return None;
                }
            }
            if r > 0 {
                let start = first_x(map, lo);
                ar.start[r - 1] = start;
                // The region's first value rounds to its first code (or is flagged).
                if s(start) < lo as f32 - NEAR {
                    return None;
                }
            }
        }
        // The estimate is never above the region nor more than one below it.
        for i in 1..8 {
            let s = ar.start[i - 1];
            let below = f32::from_bits(s.to_bits() - 1);
            if estimate(below) > i as u32 - 1 || estimate(s) < i as u32 - 1 {
                return None;
            }
        }
        Some(ar)
    }

    /// The decade's constants for `code`: (step, scale, first point).
    fn decade_of(&self, code: usize) -> (f32, f32, f32) {
        let j = code as i32 - self.j_offset;
        let e = (((j.unsigned_abs() as f32).to_bits() >> 23) & 7) as usize;
        (self.step[e], self.dscale[e], self.first[e])
    }

    /// Distance between neighbouring values in `code`'s decade.
    fn spacing_of(&self, code: usize) -> f32 {
        let (step, scale, _) = self.decade_of(code);
        step * scale
    }

    /// A code's value by the closed form (what the vector code computes per lane).
    pub(crate) fn value(&self, code: u8) -> f32 {
        let sj = (code as i32 - self.j_offset) as f32;
        if sj == self.zero_j {
            return 0.0;
        }
        let j = sj.abs();
        let p = f32::from_bits(j.to_bits() & 0xFF80_0000);
        let (step, scale, first) = self.decade_of(code as usize);
        let v = midpoint(j - p, p, step, first) * scale;
        if sj < 0.0 { -v } else { v }
    }
}

/// (b_k + b_(k+1))·0.5 for PyTorch's linspace points b_i of a decade with p intervals: the
/// first half counts up from `first`, the rest down from 1.0 (see `linspace_f32`).
fn midpoint(k: f32, p: f32, step: f32, first: f32) -> f32 {
    let half = (0.5 * p).max(1.0);
    let point = |i: f32| {
        if i < half {
            step.mul_add(i, first)
        } else {
            (-step).mul_add(p - i, 1.0)
        }
    };
    (point(k) + point(k + 1.0)) * 0.5
}

/// The region estimate for |x| = `ax` (what the vector code computes per lane).
fn estimate(ax: f32) -> u32 {
    ((ax.to_bits() >> 20).saturating_sub(ESTIMATE_C) * ESTIMATE_M) >> 16
}

/// The smallest x ≥ 0 whose code (by the search) is at least `code`.
fn first_x(map: &CodeMap, code: usize) -> f32 {
    let (mut lo, mut hi) = (0u32, LIMIT.to_bits());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if map.quantize_search(f32::from_bits(mid)) as usize >= code {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    f32::from_bits(lo)
}

/// The arithmetic form with AVX2 and FMA, eight lanes at a time.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{Arith, ESTIMATE_C, ESTIMATE_M, LIMIT, NEAR};
    use crate::optim::quant::codes::CodeMap;
    use std::arch::x86_64::*;

    /// Whether this CPU runs these kernels (checked once).
    pub(crate) fn available() -> bool {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    #[inline(always)]
    fn table(t: &[f32; 8]) -> __m256 {
        // SAFETY: `t` holds eight f32.
        unsafe { _mm256_loadu_ps(t.as_ptr()) }
    }

    /// One map's constants in registers (loaded once per block, not per eight elements).
    #[derive(Clone, Copy)]
    pub(crate) struct Consts {
        signed: bool,
        j_offset: __m256i,
        zero_j: __m256,
        step: __m256,
        dscale: __m256,
        first: __m256,
        start: __m256,
        scale: __m256,
        offset: __m256,
        hi: __m256,
    }

    impl Consts {
        #[inline(always)]
        pub(crate) fn new(ar: &Arith, signed: bool) -> Consts {
            // SAFETY: only register moves and loads of eight-f32 arrays.
            unsafe {
                Consts {
                    signed,
                    j_offset: _mm256_set1_epi32(ar.j_offset),
                    zero_j: _mm256_set1_ps(ar.zero_j),
                    step: table(&ar.step),
                    dscale: table(&ar.dscale),
                    first: table(&ar.first),
                    start: table(&ar.start),
                    scale: table(&ar.scale),
                    offset: table(&ar.offset),
                    hi: table(&ar.hi),
                }
            }
        }
    }

    /// The values of eight codes (`codes` holds at least eight bytes), bit-identical to the map.
    #[inline(always)]
    pub(crate) fn dequantize8(c: &Consts, codes: &[u8]) -> __m256 {
        assert!(codes.len() >= 8);
        // SAFETY: eight bytes are readable (asserted); the callers enable AVX2 and FMA.
        unsafe {
            let raw = _mm_loadl_epi64(codes.as_ptr() as *const __m128i);
            let idx = _mm256_cvtepu8_epi32(raw);
            let sj = _mm256_cvtepi32_ps(_mm256_sub_epi32(idx, c.j_offset));
            let sign = _mm256_set1_ps(-0.0);
            let j = if c.signed {
                _mm256_andnot_ps(sign, sj)
            } else {
                sj
            };
            let top = _mm256_castsi256_ps(_mm256_set1_epi32(0xFF80_0000u32 as i32));
            let p = _mm256_and_ps(j, top);
            let e = _mm256_srli_epi32::<23>(_mm256_castps_si256(j));
            let step = _mm256_permutevar8x32_ps(c.step, e);
            let scale = _mm256_permutevar8x32_ps(c.dscale, e);
            let first = _mm256_permutevar8x32_ps(c.first, e);
            let one = _mm256_set1_ps(1.0);
            let half = _mm256_max_ps(_mm256_mul_ps(p, _mm256_set1_ps(0.5)), one);
            let k = _mm256_sub_ps(j, p);
            // Point i: up from `first` while i < half, else down from 1.0 (as `midpoint`).
            let point = |i: __m256| {
                let up = _mm256_fmadd_ps(step, i, first);
                let down = _mm256_fnmadd_ps(step, _mm256_sub_ps(p, i), one);
                _mm256_blendv_ps(down, up, _mm256_cmp_ps::<_CMP_LT_OQ>(i, half))
            };
            let sum = _mm256_add_ps(point(k), point(_mm256_add_ps(k, one)));
            let mut v = _mm256_mul_ps(_mm256_mul_ps(sum, _mm256_set1_ps(0.5)), scale);
            if c.signed {
                v = _mm256_xor_ps(v, _mm256_and_ps(sj, sign));
            }
            _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_NEQ_OQ>(sj, c.zero_j))
        }
    }

    /// Codes of N×8 values as i32 lanes, and per vector a bit mask of the lanes the arithmetic
    /// cannot decide (near a boundary, non-finite, beyond the table, or negative for unsigned
    /// maps). The N vectors go through each step together: their chains overlap.
    #[inline(always)]
    pub(crate) fn quantize<const N: usize>(c: &Consts, x: [__m256; N]) -> [(__m256i, i32); N] {
        // Plain loops over the N vectors (closures here would not be inlined).
        // SAFETY: register operations only; the callers enable AVX2 and FMA.
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let (mut ax, mut s, mut q) = (x, x, x);
            let mut r = [_mm256_setzero_si256(); N];
            for i in 0..N {
                // Unsigned maps: negative lanes are flagged below, so x serves as |x|.
                if c.signed {
                    ax[i] = _mm256_andnot_ps(sign, x[i]);
                }
            }
            for i in 0..N {
                // The region estimate; beyond 7 only past LIMIT (flagged; vpermps wraps).
                let t = _mm256_srli_epi32::<20>(_mm256_castps_si256(ax[i]));
                let t = _mm256_subs_epu16(t, _mm256_set1_epi32(ESTIMATE_C as i32));
                r[i] = _mm256_mulhi_epu16(t, _mm256_set1_epi32(ESTIMATE_M as i32));
            }
            for i in 0..N {
                let start = _mm256_permutevar8x32_ps(c.start, r[i]);
                let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(ax[i], start);
                r[i] = _mm256_sub_epi32(r[i], _mm256_castps_si256(ge));
            }
            for i in 0..N {
                let scale = _mm256_permutevar8x32_ps(c.scale, r[i]);
                let offset = _mm256_permutevar8x32_ps(c.offset, r[i]);
                s[i] = _mm256_fmadd_ps(ax[i], scale, offset);
            }
            for i in 0..N {
                s[i] = _mm256_min_ps(s[i], _mm256_permutevar8x32_ps(c.hi, r[i]));
                q[i] = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(s[i]);
            }
            let mut out = [(_mm256_setzero_si256(), 0); N];
            for i in 0..N {
                let dist = _mm256_andnot_ps(sign, _mm256_sub_ps(s[i], q[i]));
                let near = _mm256_cmp_ps::<_CMP_GT_OQ>(dist, _mm256_set1_ps(NEAR));
                let bad = _mm256_cmp_ps::<_CMP_NLE_UQ>(ax[i], _mm256_set1_ps(LIMIT));
                let mut slow = _mm256_movemask_ps(_mm256_or_ps(near, bad));
                let mut code = _mm256_cvtps_epi32(q[i]);
                if c.signed {
                    // Negative x: the mirrored code, never the zero code (the sign rule).
                    let neg = _mm256_srai_epi32::<31>(_mm256_castps_si256(x[i]));
                    let mirrored = _mm256_sub_epi32(_mm256_set1_epi32(254), code);
                    let mirrored = _mm256_max_epi32(
                        _mm256_min_epi32(mirrored, _mm256_set1_epi32(126)),
                        _mm256_setzero_si256(),
                    );
                    code = _mm256_blendv_epi8(code, mirrored, neg);
                } else {
                    slow |= _mm256_movemask_ps(x[i]);
                }
                out[i] = (code, slow);
            }
            out
        }
    }

    /// Stores eight i32 codes (< 256) of m and of v as bytes.
    #[inline(always)]
    pub(crate) fn store_codes(cm: __m256i, cv: __m256i, qm: &mut [u8], qv: &mut [u8]) {
        assert!(qm.len() >= 8 && qv.len() >= 8);
        // SAFETY: both outputs hold eight bytes (asserted); the callers enable AVX2.
        unsafe {
            // Per 128-bit half: m0-3 v0-3 as u16, then as bytes; gather m's and v's dwords.
            let b = _mm256_packus_epi16(_mm256_packus_epi32(cm, cv), _mm256_setzero_si256());
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
            let lo = _mm256_castsi256_si128(b);
            _mm_storel_epi64(qm.as_mut_ptr() as *mut __m128i, lo);
            _mm_storel_epi64(qv.as_mut_ptr() as *mut __m128i, _mm_unpackhi_epi64(lo, lo));
        }
    }

    /// Redoes the flagged lanes of `x` with the exact step table.
    #[cold]
    pub(crate) fn fix_lanes(map: &CodeMap, x: __m256, slow: i32, out: &mut [u8]) {
        let mut xs = [0f32; 8];
        // SAFETY: `xs` holds eight f32.
        unsafe { _mm256_storeu_ps(xs.as_mut_ptr(), x) };
        for l in (0..8).filter(|l| slow >> l & 1 == 1) {
            out[l] = map.quantize(xs[l]);
        }
    }
}
