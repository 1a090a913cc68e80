//! Broadcasting elementwise kernels and their adjoint, summing a gradient back to a shape.

use super::{CHUNK, zip};
use crate::dtype::Element;
use crate::shape::{broadcast_strides, numel};
use rayon::prelude::*;

/// `f` applied elementwise after broadcasting `a` and `b` to `out_shape`.
pub fn binary<E: Element>(
    a: &[E],
    a_shape: &[usize],
    b: &[E],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(E::C, E::C) -> E::C + Sync,
) -> Vec<E> {
    let n = numel(out_shape);
    if a.len() == n && b.len() == n {
        return zip(a, b, f);
    }
    let mut out = vec![E::default(); n];
    if b.len() == 1 {
        let bv = b[0].to_c();
        return super::map(a, |x| f(x, bv));
    }
    if a.len() == 1 {
        let av = a[0].to_c();
        return super::map(b, |y| f(av, y));
    }
    // Row broadcast: `b` matches the trailing dims of `out` (a bias); `a` is full.
    if a.len() == n && out_shape.ends_with(b_shape) {
        let w = b.len();
        super::rows_mut(&mut out, w, |r, row| {
            let ar = &a[r * w..(r + 1) * w];
            for ((o, &x), &y) in row.iter_mut().zip(ar).zip(b) {
                *o = E::from_c(f(x.to_c(), y.to_c()));
            }
        });
        return out;
    }
    if b.len() == n && out_shape.ends_with(a_shape) {
        let w = a.len();
        super::rows_mut(&mut out, w, |r, row| {
            let br = &b[r * w..(r + 1) * w];
            for ((o, &x), &y) in row.iter_mut().zip(a).zip(br) {
                *o = E::from_c(f(x.to_c(), y.to_c()));
            }
        });
        return out;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let run = |start: usize, chunk: &mut [E]| {
        let mut idx = unravel(start, out_shape);
        for o in chunk.iter_mut() {
            let (ia, ib) = offsets(&idx, &sa, &sb);
            *o = E::from_c(f(a[ia].to_c(), b[ib].to_c()));
            increment(&mut idx, out_shape);
        }
    };
    if n <= CHUNK {
        run(0, &mut out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, ch)| run(c * CHUNK, ch));
    }
    out
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
    }
    idx
}

fn offsets(idx: &[usize], sa: &[usize], sb: &[usize]) -> (usize, usize) {
    idx.iter()
        .zip(sa)
        .zip(sb)
        .fold((0, 0), |(x, y), ((&i, &a), &b)| (x + i * a, y + i * b))
}

fn increment(idx: &mut [usize], shape: &[usize]) {
    for d in (0..shape.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return;
        }
        idx[d] = 0;
    }
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
    } else {
        let st = broadcast_strides(shape, g_shape);
        let zeros = vec![0; g_shape.len()];
        let mut idx = vec![0; g_shape.len()];
        for &x in g {
            let (o, _) = offsets(&idx, &st, &zeros);
            acc[o] += x.to_c();
            increment(&mut idx, g_shape);
        }
    }
    acc.into_iter().map(E::from_c).collect()
}
