//! Reductions with a fixed summation order (chunked, then combined in order), so sums are
//! bit-reproducible whatever the thread count.

use super::CHUNK;
use crate::dtype::Element;
use crate::error::Result;
use num_traits::{Float, Zero};
use rayon::prelude::*;

/// Sum of all elements, accumulated in the compute type.
pub fn sum_all<E: Element>(x: &[E]) -> E::C {
    let part = |c: &[E]| c.iter().fold(E::C::zero(), |a, &v| a + v.to_c());
    if x.len() <= CHUNK {
        part(x)
    } else {
        let parts: Vec<E::C> = x.par_chunks(CHUNK).map(part).collect();
        parts.into_iter().fold(E::C::zero(), |a, v| a + v)
    }
}

/// Sums over the middle axis of an `[outer, axis, inner]` view: out is `[outer, inner]`
/// (fallible: an empty axis can make the output larger than the input).
pub fn sum_axis<E: Element>(
    op: &'static str,
    x: &[E],
    outer: usize,
    axis: usize,
    inner: usize,
) -> Result<Vec<E>> {
    let mut out = super::zeroed(op, outer * inner)?;
    super::rows_mut(&mut out, inner, |o, row| {
        let mut acc = vec![E::C::zero(); inner];
        for a in 0..axis {
            let src = &x[(o * axis + a) * inner..(o * axis + a + 1) * inner];
            for (s, &v) in acc.iter_mut().zip(src) {
                *s += v.to_c();
            }
        }
        for (r, s) in row.iter_mut().zip(acc) {
            *r = E::from_c(s);
        }
    });
    Ok(out)
}

/// Max over the middle axis of `[outer, axis, inner]`, with the index of the first maximum
/// (NaN counts as the maximum, as in PyTorch).
pub fn max_axis<E: Element>(
    op: &'static str,
    x: &[E],
    outer: usize,
    axis: usize,
    inner: usize,
) -> Result<(Vec<E>, Vec<usize>)> {
    let mut vals = super::zeroed(op, outer * inner)?;
    let mut idx = super::with_capacity(op, outer * inner)?;
    idx.resize(outer * inner, 0usize);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = x[o * axis * inner + i].to_c();
            let mut at = 0;
            for a in 1..axis {
                let v = x[(o * axis + a) * inner + i].to_c();
                if !best.is_nan() && (v > best || v.is_nan()) {
                    best = v;
                    at = a;
                }
            }
            vals[o * inner + i] = E::from_c(best);
            idx[o * inner + i] = at;
        }
    }
    Ok((vals, idx))
}
