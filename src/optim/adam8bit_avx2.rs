//! The 8-bit AdamW block step with AVX2: eight elements per instruction, the codes' values
//! gathered from the map, the new codes from the step table (one gather and a compare per
//! element). Every operation is the scalar reference's, in the same order, without fused
//! multiply-adds, so parameters, codes and absmax are bit-identical to it (tested).

use super::BLOCK;
use super::adam8bit::{Block, Step};
use super::quant_map::QuantMap;
use std::arch::x86_64::*;

/// Whether this CPU runs the AVX2 path (checked once).
pub(super) fn available() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
}

/// The values of eight codes (scalar loads: as fast as a gather here, and simpler).
#[inline(always)]
fn lookup(codes: &[f32; 256], q: &[u8]) -> __m256 {
    let v: [f32; 8] = std::array::from_fn(|l| codes[q[l] as usize]);
    // SAFETY: `v` holds eight f32.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// Codes of eight values through `map`'s step table; lanes outside it take the search.
#[target_feature(enable = "avx2")]
fn quantize8(map: &QuantMap, x: __m256, out: &mut [u8]) {
    assert!(out.len() >= 8);
    let table = map.table();
    let bits = _mm256_castps_si256(x);
    let mag = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(0x7FFF));
    let outside = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x3F80));
    let negative = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_srli_epi32::<31>(bits));
    let idx = _mm256_add_epi32(
        _mm256_min_epu32(mag, _mm256_set1_epi32(0x3F80)),
        _mm256_and_si256(negative, _mm256_set1_epi32(0x3F81)),
    );
    // SAFETY: every index is ≤ 2·0x3F80 + 1 < table.len() (= 2·0x3F81).
    let e = unsafe { _mm256_i32gather_epi32::<4>(table.as_ptr() as *const i32, idx) };
    let base = _mm256_and_si256(e, _mm256_set1_epi32(0xFF));
    let step_at = _mm256_and_si256(_mm256_srli_epi32::<8>(e), _mm256_set1_epi32(0x1_FFFF));
    let down = _mm256_sub_epi32(
        _mm256_setzero_si256(),
        _mm256_and_si256(_mm256_srli_epi32::<25>(e), _mm256_set1_epi32(1)),
    );
    let search = _mm256_and_si256(_mm256_srli_epi32::<26>(e), _mm256_set1_epi32(1));
    let low = _mm256_and_si256(bits, _mm256_set1_epi32(0xFFFF));
    // low ≥ step_at ⇔ low + 1 > step_at (both below 2^17): −1 where stepped.
    let stepped = _mm256_cmpgt_epi32(_mm256_add_epi32(low, _mm256_set1_epi32(1)), step_at);
    let up = _mm256_sub_epi32(_mm256_setzero_si256(), stepped); // 1 where stepped
    let delta = _mm256_sub_epi32(_mm256_xor_si256(up, down), down); // ±1 or 0
    let code = _mm256_add_epi32(base, delta);
    // Eight 32-bit codes (each < 256) to eight bytes: pack to 16 then 8 bits per 128-bit half,
    // then gather the two halves' low dwords.
    let bytes = _mm256_packus_epi16(_mm256_packus_epi32(code, code), _mm256_setzero_si256());
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
    // SAFETY: `out` holds eight bytes (callers pass 8-element chunks).
    unsafe {
        _mm_storel_epi64(
            out.as_mut_ptr() as *mut __m128i,
            _mm256_castsi256_si128(bytes),
        )
    };
    let slow = _mm256_or_si256(outside, _mm256_cmpeq_epi32(search, _mm256_set1_epi32(1)));
    let slow = _mm256_movemask_ps(_mm256_castsi256_ps(slow));
    if slow != 0 {
        let mut xs = [0f32; 8];
        // SAFETY: `xs` holds eight f32.
        unsafe { _mm256_storeu_ps(xs.as_mut_ptr(), x) };
        for l in (0..8).filter(|l| slow >> l & 1 == 1) {
            out[l] = map.quantize_search(xs[l]);
        }
    }
}

/// One block (length a multiple of 8, at most [`BLOCK`]): the scalar `block_step`'s result.
#[target_feature(enable = "avx2")]
pub(super) fn block_step(b: Block<'_>, step: &Step<'_>) {
    let Block {
        w,
        g,
        qm,
        qv,
        am,
        av,
    } = b;
    let (mapm, mapv, k) = (step.m, step.v, step.k);
    let n = w.len();
    assert!(n.is_multiple_of(8) && n <= BLOCK && g.len() == n && qm.len() == n && qv.len() == n);
    let (mut sm, mut sv) = ([0f32; BLOCK], [0f32; BLOCK]);
    let s = _mm256_set1_ps;
    let (a, b) = (s(*am), s(*av));
    let (b1, omb1, b2, omb2) = (s(k.b1), s(1.0 - k.b1), s(k.b2), s(1.0 - k.b2));
    let (decay, c1, c2, eps) = (s(k.decay), s(k.c1), s(k.c2), s(k.eps));
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let inf = s(f32::INFINITY);
    let (mut max_m, mut max_v) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for j in (0..n).step_by(8) {
        // SAFETY: j + 8 ≤ n for every slice read or written here (asserted above); the gathers
        // index the 256-entry code tables with codes < 256.
        unsafe {
            let gj = _mm256_loadu_ps(g.as_ptr().add(j));
            let vm = lookup(&mapm.codes, &qm[j..j + 8]);
            let vv = lookup(&mapv.codes, &qv[j..j + 8]);
            // m = β₁·(code·a) + (1−β₁)·g;  v = β₂·(code·b) + ((1−β₂)·g)·g
            let m = _mm256_add_ps(
                _mm256_mul_ps(b1, _mm256_mul_ps(vm, a)),
                _mm256_mul_ps(omb1, gj),
            );
            let v = _mm256_add_ps(
                _mm256_mul_ps(b2, _mm256_mul_ps(vv, b)),
                _mm256_mul_ps(_mm256_mul_ps(omb2, gj), gj),
            );
            let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(gj, abs), inf);
            let (m, v) = (_mm256_and_ps(m, finite), _mm256_and_ps(v, finite));
            _mm256_storeu_ps(sm.as_mut_ptr().add(j), m);
            _mm256_storeu_ps(sv.as_mut_ptr().add(j), v);
            // max(x, acc) keeps acc when x is NaN, as f32::max does.
            max_m = _mm256_max_ps(_mm256_and_ps(m, abs), max_m);
            max_v = _mm256_max_ps(v, max_v);
            // w·decay − (c1·m) / (√v·c2 + ε), kept only for finite gradients.
            let wj = _mm256_loadu_ps(w.as_ptr().add(j));
            let step = _mm256_div_ps(
                _mm256_mul_ps(c1, m),
                _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), c2), eps),
            );
            let updated = _mm256_sub_ps(_mm256_mul_ps(wj, decay), step);
            _mm256_storeu_ps(w.as_mut_ptr().add(j), _mm256_blendv_ps(wj, updated, finite));
        }
    }
    let hmax = |x: __m256| {
        let mut l = [0f32; 8];
        // SAFETY: `l` holds eight f32.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), x) };
        l.iter().fold(0f32, |acc, &v| acc.max(v))
    };
    let (new_am, new_av) = (hmax(max_m), hmax(max_v));
    let (im, iv) = (
        if new_am > 0.0 { 1.0 / new_am } else { 0.0 },
        if new_av > 0.0 { 1.0 / new_av } else { 0.0 },
    );
    let (im, iv) = (s(im), s(iv));
    for j in (0..n).step_by(8) {
        // SAFETY: j + 8 ≤ n ≤ BLOCK.
        let (xm, xv) = unsafe {
            (
                _mm256_mul_ps(_mm256_loadu_ps(sm.as_ptr().add(j)), im),
                _mm256_mul_ps(_mm256_loadu_ps(sv.as_ptr().add(j)), iv),
            )
        };
        quantize8(mapm, xm, &mut qm[j..j + 8]);
        quantize8(mapv, xv, &mut qv[j..j + 8]);
    }
    *am = new_am;
    *av = new_av;
}
