//! Cross-entropy over class logits with PyTorch's `ignore_index` and mean reduction:
//! `L = −(1/n) Σ_{i: tᵢ≠ignore} log softmax(zᵢ)[tᵢ]`, n = number of non-ignored rows.
//! dL/dzᵢ = (softmax(zᵢ) − onehot(tᵢ))·g/n on non-ignored rows, 0 on ignored ones.
//! One fused op: each row's log Σ eᶻ (lse) is computed once; the loss reads zᵢ\[tᵢ\] − lse and
//! the backward e^(z − lse), so no log-probability tensor is ever written.
//! Saves: the logits, each row's lse and the targets.

use crate::autograd::{Backward, Grads};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::{Cast, OpSpec};
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use num_traits::{Float, One, Zero};
use smallvec::smallvec;

/// PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

impl Tensor {
    /// Mean cross-entropy of logits `[..., C]` (classes last) against `targets` with one label
    /// per row; rows labelled `ignore_index` do not count. All rows ignored gives NaN (0/0), as
    /// in PyTorch.
    pub fn cross_entropy(&self, targets: &Indices, ignore_index: i64) -> Result<Tensor> {
        let op = "cross_entropy";
        if self.rank() == 0 {
            return Err(Error::invalid(op, "logits need a class dim"));
        }
        let c = self.shape()[self.rank() - 1];
        let rows: usize = self.shape()[..self.rank() - 1].iter().product();
        if c == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "the logits {:?} have 0 classes: there is no class for a target to name",
                    self.shape()
                ),
            ));
        }
        if targets.len() != rows {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: targets.shape().to_vec(),
            });
        }
        for &t in targets.data() {
            if t != ignore_index && (t < 0 || t as usize >= c) {
                return Err(Error::IndexOutOfRange {
                    op,
                    index: t,
                    size: c,
                });
            }
        }
        let count = targets
            .data()
            .iter()
            .filter(|&&t| t != ignore_index)
            .count();
        let lse = std::cell::RefCell::new(Vec::new());
        dispatch::apply(
            &CROSS_ENTROPY,
            &[self],
            |t| {
                let out = with_buffer!(&*t[0].data(), z => {
                    let l = row_lse(z, c);
                    let loss = nll(z, &l, targets.data(), ignore_index, count);
                    *lse.borrow_mut() = l;
                    loss.into_buffer()
                });
                Ok(Forward::from(Tensor::activation(
                    out,
                    smallvec::SmallVec::new(),
                )))
            },
            |t, _| CrossEntropyBackward {
                z: save(t[0]),
                lse: lse.take(),
                targets: targets.data().to_vec(),
                ignore_index,
                count,
            },
        )
    }
}

static CROSS_ENTROPY: OpSpec = OpSpec::new("cross_entropy", "NllLoss").cast(Cast::Fp32);

/// Each row's log Σ eᶻ = m + log Σ e^(z − m) (m the row's max), in the compute type, kept as
/// f64 (exact); the kernels' vectorised exp and lane sums, rows on the kernels' threads.
fn row_lse<E: Element>(z: &[E], c: usize) -> Vec<f64> {
    crate::cpu::map_rows(z.len() / c, c, |r| {
        let row = &z[r * c..(r + 1) * c];
        crate::cpu::simd(
            #[inline(always)]
            || {
                let m = row
                    .iter()
                    .map(|v| v.to_c())
                    .fold(E::C::neg_infinity(), |m, v| {
                        if v > m || v.is_nan() { v } else { m }
                    });
                let s = crate::cpu::lane_sum(c, |k| (row[k].to_c() - m).exp_k());
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

struct CrossEntropyBackward {
    z: Tensor,
    lse: Vec<f64>,
    targets: Vec<i64>,
    ignore_index: i64,
    count: usize,
}

fn grad<E: Element>(
    g: &[E],
    z: &[E],
    lse: &[f64],
    targets: &[i64],
    ignore: i64,
    count: usize,
) -> Vec<E> {
    let c = z.len() / targets.len().max(1);
    let scale = g[0].to_c() / <E::C as Real>::c(count as f64);
    let mut out = vec![E::default(); z.len()];
    // Row by row on the kernels' threads; softmax = e^(z − lse) by the kernels' vectorised exp.
    crate::cpu::rows_mut(&mut out, c, |r, row| {
        let t = targets[r];
        if t == ignore {
            return;
        }
        let (z, l) = (&z[r * c..(r + 1) * c], <E::C as Real>::c(lse[r]));
        crate::cpu::simd(
            #[inline(always)]
            || {
                for (o, v) in row.iter_mut().zip(z) {
                    *o = E::from_c((v.to_c() - l).exp_k() * scale);
                }
            },
        );
        let p = (z[t as usize].to_c() - l).exp_k();
        row[t as usize] = E::from_c((p - E::C::one()) * scale);
    });
    out
}

impl Backward for CrossEntropyBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let out = zip_buffers!("cross_entropy_backward", &*g.data(), &*self.z.data(), gv, zv =>
            grad(gv, zv, &self.lse, &self.targets, self.ignore_index, self.count).into_buffer())?;
        Ok(smallvec![Some(Tensor::activation(
            out,
            self.z.shape().into()
        ))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.z);
    }
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.targets.as_slice()) + std::mem::size_of_val(self.lse.as_slice())
    }
}
