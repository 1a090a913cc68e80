//! bitsandbytes' dynamic (tree) quantization maps and its nearest-code search. The CUDA
//! kernel uses the same maps and the same search, so CPU and GPU pick identical codes.

/// Number of codes.
pub const CODES: usize = 256;

/// Builds the 8-bit dynamic map with 7 exponent bits: for i = 0..6, the midpoints of
/// `linspace(0.1, 1, n_i)` scaled by 10^(i−6), with n_i = 2^i + 1 (signed, plus negatives) or
/// 2^(i+1) + 1 (unsigned); then 0 and 1.0; sorted.
pub fn dynamic_map(signed: bool) -> [f32; CODES] {
    let mut data: Vec<f64> = Vec::with_capacity(CODES);
    for i in 0..7i32 {
        let n = if signed {
            (1usize << i) + 1
        } else {
            (1usize << (i + 1)) + 1
        };
        let scale = 10f64.powi(i - 6);
        let points: Vec<f64> = (0..n)
            .map(|k| 0.1 + 0.9 * k as f64 / (n - 1) as f64)
            .collect();
        for w in points.windows(2) {
            let mid = (w[0] + w[1]) / 2.0 * scale;
            data.push(mid);
            if signed {
                data.push(-mid);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    debug_assert_eq!(data.len(), CODES);
    data.sort_by(f64::total_cmp);
    let mut out = [0f32; CODES];
    for (o, d) in out.iter_mut().zip(data) {
        *o = d as f32;
    }
    out
}

/// A map with its nearest-code search.
#[derive(Debug, Clone)]
pub struct QuantMap {
    /// The 256 sorted code values.
    pub codes: [f32; CODES],
    /// Signed maps hold negative values.
    pub signed: bool,
    /// The code of every f32 whose top 16 bits select a range that maps to one code, else
    /// [`AMBIGUOUS`]: a table lookup replaces the search for most values, with identical results.
    lut: Vec<u16>,
}

const AMBIGUOUS: u16 = u16::MAX;

impl QuantMap {
    /// The signed map (Adam's first moment).
    pub fn signed() -> QuantMap {
        QuantMap::with_codes(dynamic_map(true), true)
    }

    /// The unsigned map (Adam's second moment).
    pub fn unsigned() -> QuantMap {
        QuantMap::with_codes(dynamic_map(false), false)
    }

    /// A map over `codes`, with its lookup table. Quantization is monotone in x, so a range of
    /// floats whose two ends get the same code maps entirely to it.
    fn with_codes(codes: [f32; CODES], signed: bool) -> QuantMap {
        let mut m = QuantMap {
            codes,
            signed,
            lut: Vec::new(),
        };
        m.lut = (0..=u16::MAX as u32)
            .map(|b| {
                let (lo, hi) = (f32::from_bits(b << 16), f32::from_bits((b << 16) | 0xFFFF));
                if lo.is_nan() || hi.is_nan() {
                    return AMBIGUOUS;
                }
                let q = m.quantize_search(lo);
                if q == m.quantize_search(hi) {
                    q as u16
                } else {
                    AMBIGUOUS
                }
            })
            .collect();
        m
    }

    /// The code whose value is 0.
    pub fn zero_code(&self) -> u8 {
        self.codes
            .iter()
            .position(|&c| c == 0.0)
            .expect("the map holds 0") as u8
    }

    /// The value of a code.
    #[inline]
    pub fn value(&self, q: u8) -> f32 {
        self.codes[q as usize]
    }

    /// The nearest code to `x` (already divided by the block's absmax): bitsandbytes' binary
    /// search over 7 levels, then a comparison with the midpoint of the bracketing codes.
    #[inline]
    pub fn nearest(&self, x: f32) -> u8 {
        let c = &self.codes;
        let (mut pivot, mut upper_pivot, mut lower_pivot) = (127usize, 255usize, 0usize);
        let (mut lower, mut upper) = (-1.0f32, 1.0f32);
        let mut val = c[pivot];
        let mut step = 64;
        while step > 0 {
            if x > val {
                lower_pivot = pivot;
                lower = val;
                pivot += step;
            } else {
                upper_pivot = pivot;
                upper = val;
                pivot -= step;
            }
            val = c[pivot];
            step >>= 1;
        }
        if upper_pivot == 255 {
            upper = c[upper_pivot];
        }
        if lower_pivot == 0 {
            lower = c[lower_pivot];
        }
        let q = if x > val {
            if x > (upper + val) * 0.5 {
                upper_pivot
            } else {
                pivot
            }
        } else if x < (lower + val) * 0.5 {
            lower_pivot
        } else {
            pivot
        };
        q as u8
    }

    /// [`QuantMap::nearest`] plus bitsandbytes' sign rule for signed maps: a code whose value
    /// has the other sign than `x` (a negative x rounded to 0) moves one code towards x.
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> u8 {
        match self.lut[(x.to_bits() >> 16) as usize] {
            AMBIGUOUS => self.quantize_search(x),
            q => q as u8,
        }
    }

    /// [`QuantMap::quantize`] by search alone (what the CUDA kernel does).
    #[inline(never)]
    pub fn quantize_search(&self, x: f32) -> u8 {
        let q = self.nearest(x);
        if self.signed && self.codes[q as usize].is_sign_negative() != x.is_sign_negative() {
            if x > 0.0 {
                q.saturating_add(1)
            } else {
                q.saturating_sub(1)
            }
        } else {
            q
        }
    }
}
