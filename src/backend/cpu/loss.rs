//! Cross-entropy on the CPU: each row's log Σ eᶻ once (the kernels' exp, lane sums, rows on
//! the kernels' threads), the loss from z[target] − lse, the gradient e^(z − lse) − onehot.
//! f16 and bf16 logits compute in f32, so reading them as they are gives the bits of widening
//! them first; the loss comes in the dtype asked (f32 under autocast), the gradient in z's.

use super::super::Targets;
use crate::cpu;
use crate::dtype::{DType, Element, Real};
use crate::error::{Error, Result};
use crate::storage::{Buffer, IntoBuffer};
use crate::with_buffer;
use num_traits::{Float, One, Zero};

pub(super) fn cross_entropy(
    z: &Buffer,
    c: usize,
    t: Targets,
    out: DType,
) -> Result<(Buffer, Vec<f64>)> {
    check_wide(out, z.dtype(), "cross_entropy")?;
    with_buffer!(z, z => forward(z, c, t, out))
}

fn forward<E: Element>(z: &[E], c: usize, t: Targets, out: DType) -> Result<(Buffer, Vec<f64>)> {
    let l = row_lse(z, c);
    let loss = nll(z, &l, t.labels, t.ignore, t.count);
    let loss = if out == E::DTYPE {
        Buffer::from_vec(vec![E::from_c(loss)])
    } else {
        // The compute type itself (f32 for half logits): no rounding.
        let wide = num_traits::ToPrimitive::to_f64(&loss).unwrap_or(f64::NAN);
        Buffer::full("cross_entropy", out, 1, wide)?
    };
    Ok((loss, l))
}

/// The loss (or its incoming gradient) is in the logits' dtype, or in f32 for f16 and bf16
/// logits (their compute type).
fn check_wide(wide: DType, z: DType, op: &'static str) -> Result<()> {
    if wide == z || (wide == DType::F32 && matches!(z, DType::F16 | DType::BF16)) {
        return Ok(());
    }
    Err(Error::DTypeMismatch {
        op,
        lhs: wide,
        rhs: z,
    })
}

/// The one-element incoming gradient, in the logits' compute type (exact for either dtype
/// [`check_wide`] allows).
fn incoming<E: Element>(g: &Buffer) -> E::C {
    <E::C as Real>::c(g.to_f64_vec().first().copied().unwrap_or(f64::NAN))
}

pub(super) fn cross_entropy_grad(
    g: &Buffer,
    z: &Buffer,
    lse: &[f64],
    t: Targets,
) -> Result<Buffer> {
    check_wide(g.dtype(), z.dtype(), "cross_entropy_backward")?;
    with_buffer!(z, zv => Ok(grad(g, zv, lse, t.labels, t.ignore, t.count)?.into_buffer()))
}

/// [`cross_entropy_grad`] written over the logits `z` (no second logits-sized buffer).
pub(super) fn cross_entropy_grad_in_place(
    g: &Buffer,
    z: &mut Buffer,
    lse: &[f64],
    t: Targets,
) -> Result<()> {
    check_wide(g.dtype(), z.dtype(), "cross_entropy_backward")?;
    with_buffer!(z, zv => grad_rows(g, None, zv, lse, t.labels, t.ignore, t.count));
    Ok(())
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
fn nll<E: Element>(z: &[E], lse: &[f64], targets: &[i64], ignore: i64, count: usize) -> E::C {
    let c = z.len() / targets.len().max(1);
    let mut s = E::C::zero();
    for (r, &t) in targets.iter().enumerate() {
        if t != ignore {
            s += z[r * c + t as usize].to_c() - <E::C as Real>::c(lse[r]);
        }
    }
    -s / <E::C as Real>::c(count as f64)
}

/// dL/dz into a fresh buffer: e^(z − lse)·g/n, minus g/n at each row's target.
fn grad<E: Element>(
    g: &Buffer,
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
    g: &Buffer,
    z: Option<&[E]>,
    out: &mut [E],
    lse: &[f64],
    targets: &[i64],
    ignore: i64,
    count: usize,
) {
    let c = out.len() / targets.len().max(1);
    let scale = incoming::<E>(g) / <E::C as Real>::c(count as f64);
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
