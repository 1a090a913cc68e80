//! The quantizer the 8-bit optimizer uses: a code map ([`CodeMap`]) and, where the CPU has
//! AVX2 and FMA, its lookup-free arithmetic form ([`Arith`]) for whole slices.

use super::arith::Arith;
use super::codes::{CODES, CodeMap};
use crate::error::{Error, Result};

/// The error for buffers of different lengths.
fn lengths(op: &'static str, a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: vec![a],
            rhs: vec![b],
        })
    }
}

/// A code map with its fastest slice paths on this CPU.
#[derive(Debug, Clone)]
pub struct QuantMap {
    table: CodeMap,
    /// The lookup-free form the vectorised paths use (always derived for these maps).
    arith: Option<Arith>,
}

impl QuantMap {
    /// The signed map (Adam's first moment).
    pub fn signed() -> QuantMap {
        QuantMap::of(CodeMap::signed())
    }

    /// The unsigned map (Adam's second moment).
    pub fn unsigned() -> QuantMap {
        QuantMap::of(CodeMap::unsigned())
    }

    fn of(table: CodeMap) -> QuantMap {
        let arith = Arith::derive(&table);
        QuantMap { table, arith }
    }

    /// The 256 sorted code values.
    pub fn codes(&self) -> &[f32; CODES] {
        &self.table.codes
    }

    /// The map with its search and step table (one value or code at a time).
    pub fn table(&self) -> &CodeMap {
        &self.table
    }

    /// Whether the vectorised, lookup-free quantizer runs on this CPU (AVX2 and FMA) for
    /// this map; otherwise the slice functions use the step table, with the same results.
    pub fn vectorised(&self) -> bool {
        self.arith_here().is_some()
    }

    /// The lookup-free form, when this CPU runs it.
    pub(crate) fn arith_here(&self) -> Option<&Arith> {
        #[cfg(target_arch = "x86_64")]
        if super::arith::avx2::available() {
            return self.arith.as_ref();
        }
        None
    }

    /// The codes of `xs` into `out` (same length, else a `ShapeMismatch`):
    /// [`CodeMap::quantize`](super::CodeMap::quantize) for each, eight at a time without table lookups where the CPU
    /// allows.
    pub fn quantize_slice(&self, xs: &[f32], out: &mut [u8]) -> Result<()> {
        lengths("quantize_slice", xs.len(), out.len())?;
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if let Some(ar) = self.arith_here() {
            // SAFETY: AVX2 and FMA are present (checked by `arith_here`).
            done = unsafe { self.quantize_slice_avx2(ar, xs, out) };
        }
        for (x, q) in xs[done..].iter().zip(&mut out[done..]) {
            *q = self.table.quantize(*x);
        }
        Ok(())
    }

    /// The whole groups of eight of [`QuantMap::quantize_slice`]; returns how many it did.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn quantize_slice_avx2(&self, ar: &Arith, xs: &[f32], out: &mut [u8]) -> usize {
        use super::arith::avx2;
        let c = avx2::Consts::new(ar, self.table.signed);
        let mut spare = [0u8; 8];
        for (x, q) in xs.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            // SAFETY: `x` holds eight f32.
            let x = unsafe { std::arch::x86_64::_mm256_loadu_ps(x.as_ptr()) };
            let [(code, slow)] = avx2::quantize(&c, [x]);
            avx2::store_codes(code, code, q, &mut spare);
            if slow != 0 {
                avx2::fix_lanes(&self.table, x, slow, q);
            }
        }
        xs.len() / 8 * 8
    }

    /// The values of `codes` into `out` (same length, else a `ShapeMismatch`), bit-identical
    /// to [`CodeMap::value`](super::CodeMap::value).
    pub fn dequantize_slice(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        lengths("dequantize_slice", codes.len(), out.len())?;
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if let Some(ar) = self.arith_here() {
            // SAFETY: AVX2 and FMA are present (checked by `arith_here`).
            done = unsafe { self.dequantize_slice_avx2(ar, codes, out) };
        }
        for (c, v) in codes[done..].iter().zip(&mut out[done..]) {
            *v = self.table.value(*c);
        }
        Ok(())
    }

    /// The whole groups of eight of [`QuantMap::dequantize_slice`]; returns how many it did.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn dequantize_slice_avx2(&self, ar: &Arith, codes: &[u8], out: &mut [f32]) -> usize {
        use super::arith::avx2;
        let c = avx2::Consts::new(ar, self.table.signed);
        for (q, v) in codes.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            // SAFETY: `v` holds eight f32.
            unsafe {
                std::arch::x86_64::_mm256_storeu_ps(v.as_mut_ptr(), avx2::dequantize8(&c, q))
            };
        }
        codes.len() / 8 * 8
    }
}
