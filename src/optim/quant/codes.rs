//! bitsandbytes' dynamic (tree) quantization maps and their nearest-code search, with a step
//! table that gives the search's answer in one lookup. The CUDA kernel uses the same maps and
//! the same search, so CPU and GPU pick identical codes.

/// Number of codes.
pub const CODES: usize = 256;

/// Builds bitsandbytes' 8-bit dynamic map (`create_dynamic_map`, 7 exponent bits) bit for bit:
/// for i = 0..6, the midpoints of `torch.linspace(0.1, 1, n_i, dtype=float32)` times
/// `10^(i−6)`, with n_i = 2^i + 1 (signed, plus negatives) or 2^(i+1) + 1 (unsigned); then 0
/// and 1.0; sorted. Every step is the f32 operation PyTorch performs (see `linspace_f32`).
pub fn dynamic_map(signed: bool) -> [f32; CODES] {
    let mut data: Vec<f32> = Vec::with_capacity(CODES);
    for i in 0..7i32 {
        let n = if signed {
            (1usize << i) + 1
        } else {
            (1usize << (i + 1)) + 1
        };
        // Python's 10 ** (i − 6): the correctly rounded double, then f32 in the multiply.
        let scale = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i as usize] as f32;
        let b = linspace_f32(0.1, 1.0, n);
        for w in b.windows(2) {
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
    data.sort_by(f32::total_cmp);
    let mut out = [0f32; CODES];
    out.copy_from_slice(&data);
    out
}

/// PyTorch's CPU `linspace` for f32: step = (end − start)/(n − 1) in f32; the first half
/// counts up from `start`, the rest down from `end`, each point one fused multiply-add (the
/// kernel is built with contraction on), so rounded once.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - i - 1) as f32, end)
            }
        })
        .collect()
}

/// A map with its nearest-code search and the step table that reproduces the search.
#[derive(Debug, Clone)]
pub struct CodeMap {
    /// The 256 sorted code values.
    pub codes: [f32; CODES],
    /// Signed maps hold negative values.
    pub signed: bool,
    /// One entry per range of f32s sharing their top 16 bits, for |x| < 1.0078 (see [`TableEntry`]):
    /// the code at the range's start and the low 16 bits where the search's answer steps by
    /// one code. Quantization is monotone in x, so this reproduces the search exactly.
    lut: Vec<u32>,
    /// The search's answer beyond the table (|x| ≥ 1.0078, ±inf, NaN), by NaN-ness and sign:
    /// there every comparison the search makes has the same outcome as for ±inf or NaN.
    saturated: [u8; 4],
}

/// Top-16-bit prefixes of |x| covered by the table: up to 1.0 and its range (`0x3F80_xxxx`).
pub(crate) const MAX_PREFIX: u32 = 0x3F80;
/// Offset of the negative half of the table.
const NEG: u32 = MAX_PREFIX + 1;

/// Layout of a table entry: bits 0–7 the code at the range's start; bits 8–24 the first low-16
/// value at which the code steps (0x10000: never); bit 25 set when the step goes down (negative
/// x: larger low bits are further from zero); bit 26 set when the range needs the search (two
/// or more steps, which no range of these maps has, kept for safety).
struct TableEntry;

impl TableEntry {
    const NO_STEP: u32 = 0x1_0000;
    const DOWN: u32 = 1 << 25;
    const SEARCH: u32 = 1 << 26;
}

impl CodeMap {
    /// The signed map (Adam's first moment).
    pub fn signed() -> CodeMap {
        CodeMap::with_codes(dynamic_map(true), true)
    }

    /// The unsigned map (Adam's second moment).
    pub fn unsigned() -> CodeMap {
        CodeMap::with_codes(dynamic_map(false), false)
    }

    /// A map over `codes`, with its step table.
    fn with_codes(codes: [f32; CODES], signed: bool) -> CodeMap {
        let mut m = CodeMap {
            codes,
            signed,
            lut: Vec::new(),
            saturated: [0; 4],
        };
        m.saturated =
            [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN].map(|x| m.quantize_search(x));
        m.lut = (0..2 * NEG)
            .map(|i| {
                let prefix = if i < NEG { i } else { 0x8000 | (i - NEG) };
                m.entry(prefix)
            })
            .collect();
        m
    }

    fn entry(&self, prefix: u32) -> u32 {
        let at = |low: u32| self.quantize_search(f32::from_bits((prefix << 16) | low)) as i32;
        let (first, last) = (at(0), at(0xFFFF));
        match last - first {
            0 => first as u32 | (TableEntry::NO_STEP << 8),
            1 | -1 => {
                // The first low value whose code is `last`.
                let (mut lo, mut hi) = (0u32, 0xFFFFu32);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if at(mid) == last {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                let down = if last < first { TableEntry::DOWN } else { 0 };
                first as u32 | (lo << 8) | down
            }
            _ => first as u32 | TableEntry::SEARCH,
        }
    }

    /// The table index of `x`'s bits and whether `x` lies outside the table (|x| ≥ 1.0078,
    /// inf, NaN: those take the search).
    #[inline(always)]
    fn index(bits: u32) -> (usize, bool) {
        let mag = (bits >> 16) & 0x7FFF;
        let idx = mag.min(MAX_PREFIX) + if bits >> 31 == 1 { NEG } else { 0 };
        (idx as usize, mag > MAX_PREFIX)
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

    /// [`CodeMap::nearest`] plus bitsandbytes' sign rule for signed maps: a code whose value
    /// has the other sign than `x` (a negative x rounded to 0) moves one code towards x.
    /// Computed from the step table; identical to [`CodeMap::quantize_search`] for every x.
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> u8 {
        let bits = x.to_bits();
        let (idx, outside) = Self::index(bits);
        let e = self.lut[idx];
        if outside {
            return self.saturated[usize::from(x.is_nan()) << 1 | (bits >> 31) as usize];
        }
        if e & TableEntry::SEARCH != 0 {
            return self.quantize_search(x);
        }
        let stepped = (bits & 0xFFFF) >= (e >> 8) & 0x1_FFFF;
        let base = (e & 0xFF) as u8;
        match (stepped, e & TableEntry::DOWN != 0) {
            (false, _) => base,
            (true, false) => base + 1,
            (true, true) => base - 1,
        }
    }

    /// [`CodeMap::quantize`] by search alone (what the CUDA kernel does).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_range_of_either_map_holds_two_code_steps() {
        for map in [CodeMap::signed(), CodeMap::unsigned()] {
            assert!(map.lut.iter().all(|e| e & TableEntry::SEARCH == 0));
        }
    }
}
