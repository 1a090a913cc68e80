//! softmax and log_softmax rows on the CPU: stabilised by the row max, exponentials from the
//! kernels' `exp_k`, sums in lanes (`cpu::lane_sum`), so one vectorised pass gives the same
//! bits on every CPU.

use super::super::Split;
use crate::cpu;
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};
use num_traits::{Float, Zero};

pub(super) fn softmax(x: &Buffer, split: Split, log: bool) -> Result<Buffer> {
    Ok(with_buffer!(x, v => forward(v, split, log)?.into_buffer()))
}

pub(super) fn softmax_grad(g: &Buffer, y: &Buffer, split: Split, log: bool) -> Result<Buffer> {
    zip_buffers!("softmax_backward", g, y, gv, yv => backward(gv, yv, split, log)?.into_buffer())
}

/// Rows up to this long keep their exponentials on the stack (computed once).
const STACK_ROW: usize = 1024;

/// One contiguous row: y = e^(x−m) / Σ, or x − m − log Σ. The exponentials are the kernels'
/// (`exp_k`) and the sum runs in lanes (`cpu::lane_sum`): one vectorised pass, the same bits
/// on every CPU.
pub(crate) fn forward_row<E: Element>(x: &[E], out: &mut [E], log: bool) {
    cpu::simd(
        #[inline(always)]
        || {
            let m = cpu::lane_max(x);
            let mut col = [E::C::zero(); STACK_ROW];
            let s = if x.len() <= STACK_ROW {
                for (c, v) in col.iter_mut().zip(x) {
                    *c = (v.to_c() - m).exp_k();
                }
                cpu::lane_sum(x.len(), |k| col[k])
            } else {
                cpu::lane_sum_map(x, |v| (v - m).exp_k())
            };
            let ls = s.ln();
            let keep = x.len() <= STACK_ROW;
            for (k, (o, v)) in out.iter_mut().zip(x).enumerate() {
                let z = v.to_c() - m;
                *o = E::from_c(if log {
                    z - ls
                } else if keep {
                    col[k] / s
                } else {
                    z.exp_k() / s
                });
            }
        },
    )
}

fn forward<E: Element>(x: &[E], (o, a, i): Split, log: bool) -> Result<Vec<E>> {
    if x.is_empty() {
        return Ok(Vec::new()); // `o · i` may still be huge when the axis is empty
    }
    let mut out = cpu::zeroed("softmax", x.len())?;
    if i == 1 {
        cpu::rows_mut(&mut out, a, |r, row| {
            forward_row(&x[r * a..(r + 1) * a], row, log)
        });
        return Ok(out);
    }
    let (mut col, mut res) = (vec![E::default(); a], vec![E::default(); a]);
    for r in 0..o {
        for c in 0..i {
            let at = |k: usize| (r * a + k) * i + c;
            for (k, slot) in col.iter_mut().enumerate() {
                *slot = x[at(k)];
            }
            forward_row(&col, &mut res, log);
            for (k, &v) in res.iter().enumerate() {
                out[at(k)] = v;
            }
        }
    }
    Ok(out)
}

/// One row of the adjoint (`g`, `y` and `out` read with stride `i`).
pub(crate) fn backward_row<E: Element>(g: &[E], y: &[E], out: &mut [E], log: bool) {
    cpu::simd(
        #[inline(always)]
        || {
            if log {
                let s = cpu::lane_sum(g.len(), |k| g[k].to_c());
                for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                    *o = E::from_c(g.to_c() - y.to_c().exp_k() * s);
                }
            } else {
                let s = cpu::lane_sum(g.len(), |k| g[k].to_c() * y[k].to_c());
                for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                    *o = E::from_c(y.to_c() * (g.to_c() - s));
                }
            }
        },
    )
}

fn backward<E: Element>(g: &[E], y: &[E], (o, a, i): Split, log: bool) -> Result<Vec<E>> {
    if g.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = cpu::zeroed("softmax_backward", g.len())?;
    if i == 1 {
        cpu::rows_mut(&mut out, a, |r, row| {
            let span = r * a..(r + 1) * a;
            backward_row(&g[span.clone()], &y[span], row, log)
        });
        return Ok(out);
    }
    let (mut gc, mut yc, mut res) = (
        vec![E::default(); a],
        vec![E::default(); a],
        vec![E::default(); a],
    );
    for r in 0..o {
        for c in 0..i {
            let at = |k: usize| (r * a + k) * i + c;
            for k in 0..a {
                gc[k] = g[at(k)];
                yc[k] = y[at(k)];
            }
            backward_row(&gc, &yc, &mut res, log);
            for (k, &v) in res.iter().enumerate() {
                out[at(k)] = v;
            }
        }
    }
    Ok(out)
}
