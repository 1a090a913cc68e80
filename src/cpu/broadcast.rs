//! Broadcasting elementwise kernels and their adjoint, summing a gradient back to a shape.

use super::zip;
use crate::dtype::Element;
use crate::error::Result;
use crate::shape::{broadcast_strides, numel};

/// `f` applied elementwise after broadcasting `a` and `b` to `out_shape` (a validated shape);
/// `op` names the caller in an out-of-memory error.
pub fn binary<E: Element>(
    op: &'static str,
    a: &[E],
    a_shape: &[usize],
    b: &[E],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(E::C, E::C) -> E::C + Sync,
) -> Result<Vec<E>> {
    let n = numel(out_shape);
    if a.len() == n && b.len() == n {
        return zip(op, a, b, f);
    }
    if b.len() == 1 && a.len() == n {
        let bv = b[0].to_c();
        return super::map(op, a, |x| f(x, bv));
    }
    if a.len() == 1 && b.len() == n {
        let av = a[0].to_c();
        return super::map(op, b, |y| f(av, y));
    }
    let mut out = super::zeroed(op, n)?;
    // Row broadcast: `b` matches the trailing dims of `out` (a bias); `a` is full.
    if a.len() == n && out_shape.ends_with(b_shape) {
        let w = b.len();
        super::rows_mut(&mut out, w, |r, row| {
            super::zip_into(row, &a[r * w..(r + 1) * w], b, &f);
        });
        return Ok(out);
    }
    if b.len() == n && out_shape.ends_with(a_shape) {
        let w = a.len();
        super::rows_mut(&mut out, w, |r, row| {
            super::zip_into(row, a, &b[r * w..(r + 1) * w], &f);
        });
        return Ok(out);
    }
    // General case, one output row (last dim) at a time: each operand's row start comes from
    // its broadcast strides, then a strided inner loop (stride 0 or 1 for broadcast dims).
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let w = out_shape[out_shape.len() - 1];
    let (la, lb) = (sa[sa.len() - 1], sb[sb.len() - 1]);
    super::rows_mut(&mut out, w, |r, row| {
        let (oa, ob) = (
            super::row_base(r, out_shape, &sa),
            super::row_base(r, out_shape, &sb),
        );
        if la == 1 && lb == 1 {
            super::zip_into(row, &a[oa..oa + w], &b[ob..ob + w], &f);
            return;
        }
        for (j, o) in row.iter_mut().enumerate() {
            *o = E::from_c(f(a[oa + j * la].to_c(), b[ob + j * lb].to_c()));
        }
    });
    Ok(out)
}

/// Sums `g` (of shape `g_shape`) over the dims that broadcasting expanded, giving `shape`.
pub fn sum_to<E: Element>(g: &[E], g_shape: &[usize], shape: &[usize]) -> Vec<E> {
    let n = numel(shape);
    if n == g.len() {
        return g.to_vec();
    }
    let mut acc = vec![<E::C as num_traits::Zero>::zero(); n];
    if g_shape.ends_with(shape) {
        // Bias-style: fold rows of width n in order.
        for row in g.chunks(n.max(1)) {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x.to_c();
            }
        }
    } else if !g_shape.is_empty() {
        let st = broadcast_strides(shape, g_shape);
        let w = g_shape[g_shape.len() - 1].max(1);
        let ls = st[st.len() - 1];
        for (r, row) in g.chunks(w).enumerate() {
            let o = super::row_base(r, g_shape, &st);
            for (j, &x) in row.iter().enumerate() {
                acc[o + j * ls] += x.to_c();
            }
        }
    }
    acc.into_iter().map(E::from_c).collect()
}
