//! Cross-entropy on the CPU: each row's log Σ eᶻ once (the kernels' exp, lane sums, rows on
//! the kernels' threads), the loss from z[target] − lse, the gradient e^(z − lse) − onehot.

use super::super::Targets;
use crate::cpu;
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};
use num_traits::{Float, One, Zero};

pub(super) fn cross_entropy(z: &Buffer, c: usize, t: Targets) -> Result<(Buffer, Vec<f64>)> {
    Ok(with_buffer!(z, z => {
        let l = row_lse(z, c);
        let loss = nll(z, &l, t.labels, t.ignore, t.count);
        (loss.into_buffer(), l)
    }))
}

pub(super) fn cross_entropy_grad(
    g: &Buffer,
    z: &Buffer,
    lse: &[f64],
    t: Targets,
) -> Result<Buffer> {
    zip_buffers!("cross_entropy_backward", g, z, gv, zv =>
        grad(gv, zv, lse, t.labels, t.ignore, t.count)?.into_buffer())
}

/// [`cross_entropy_grad`] written over the logits `z` (no second logits-sized buffer).
pub(super) fn cross_entropy_grad_in_place(
    g: &Buffer,
    z: &mut Buffer,
    lse: &[f64],
    t: Targets,
) -> Result<()> {
    zip_buffers!("cross_entropy_backward", g, z, gv, zv =>
        grad_rows(gv, None, zv, lse, t.labels, t.ignore, t.count))
}

/// Each row's log Σ eᶻ = m + log Σ e^(z − m) (m the row's max), in the compute type, kept as
/// f64 (exact); the kernels' vectorised exp and lane sums, rows on the kernels' threads.
fn row_lse<E: Element>(z: &[E], c: usize) -> Vec<f64> {
    cpu::map_rows(z.len() / c, c, |r| {
        let row = &z[r * c..(r + 1) * c];
        cpu::simd(
            #[inline(always)]
            || {
                let m = cpu::lane_max(row);
                let s = cpu::lane_sum_map(row, |v| (v - m).exp_k());
                num_traits::ToPrimitive::to_f64(&(m + s.ln())).unwrap_or(f64::NAN)
            },
        )
    })
}

/// −(1/n) Σ (z\[target\] − lse) over the non-ignored rows.
fn nll<E: Element>(z: &[E], lse: &[f64], targets: &[i64], ignore: i64, count: usize) -> Vec<E> {
    let c = z.len() / targets.len().max(1);
    let mut s = E::C::zero();
    for (r, &t) in targets.iter().enumerate() {
        if t != ignore {
            s += z[r * c + t as usize].to_c() - <E::C as Real>::c(lse[r]);
        }
    }
    vec![E::from_c(-s / <E::C as Real>::c(count as f64))]
}

/// dL/dz into a fresh buffer: e^(z − lse)·g/n, minus g/n at each row's target.
fn grad<E: Element>(
    g: &[E],
    z: &[E],
    lse: &[f64],
    targets: &[i64],
    ignore: i64,
    count: usize,
) -> Result<Vec<E>> {
    let mut out = cpu::zeroed("cross_entropy_backward", z.len())?;
    grad_rows(g, Some(z), &mut out, lse, targets, ignore, count);
    Ok(out)
}

/// Each row of `out` becomes its gradient, from `z`'s row or, without `z`, from the logits
/// `out` holds (the same arithmetic in both: the bits do not depend on where the result goes).
fn grad_rows<E: Element>(
    g: &[E],
    z: Option<&[E]>,
    out: &mut [E],
    lse: &[f64],
    targets: &[i64],
    ignore: i64,
    count: usize,
) {
    let c = out.len() / targets.len().max(1);
    let scale = g[0].to_c() / <E::C as Real>::c(count as f64);
    // Row by row on the kernels' threads; softmax = e^(z − lse) by the kernels' vectorised exp.
    cpu::rows_mut(out, c, |r, row| {
        let t = targets[r];
        if t == ignore {
            row.fill(E::default());
            return;
        }
        let l = <E::C as Real>::c(lse[r]);
        // Copied into each loop's own frame, `l` and `scale` stay in registers (read through a
        // reference, every store to the row could change them, and the loop stays scalar).
        let soft = move |v: E| E::from_c((v.to_c() - l).exp_k() * scale);
        let zt = match z {
            Some(z) => {
                let z = &z[r * c..(r + 1) * c];
                cpu::simd(
                    #[inline(always)]
                    || {
                        let here = soft;
                        for (o, &v) in row.iter_mut().zip(z) {
                            *o = here(v);
                        }
                    },
                );
                z[t as usize]
            }
            None => {
                let zt = row[t as usize];
                cpu::simd(
                    #[inline(always)]
                    || {
                        let here = soft;
                        for o in row.iter_mut() {
                            *o = here(*o);
                        }
                    },
                );
                zt
            }
        };
        let p = (zt.to_c() - l).exp_k();
        row[t as usize] = E::from_c((p - E::C::one()) * scale);
    });
}
