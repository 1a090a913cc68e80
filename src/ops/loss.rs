//! Cross-entropy over class logits with PyTorch's `ignore_index` and mean reduction:
//! `L = −(1/n) Σ_{i: tᵢ≠ignore} log softmax(zᵢ)[tᵢ]`, n = number of non-ignored rows.
//! dL/dzᵢ = (softmax(zᵢ) − onehot(tᵢ))·g/n on non-ignored rows, 0 on ignored ones.
//! Saves: the log-probabilities (as PyTorch's log_softmax + nll_loss does) and the targets.

use crate::autograd::{Backward, Grads};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::softmax::softmax_kernel;
use crate::ops::spec::{Cast, OpSpec};
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use num_traits::{One, Zero};
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
        let logp = std::cell::RefCell::new(None);
        dispatch::apply(
            &CROSS_ENTROPY,
            &[self],
            |t| {
                let lp = softmax_kernel(t[0], (rows, c, 1), true);
                let out = with_buffer!(&*lp.data(), v => nll(v, targets.data(), ignore_index, count).into_buffer());
                *logp.borrow_mut() = Some(lp);
                Ok(Forward::from(Tensor::activation(
                    out,
                    smallvec::SmallVec::new(),
                )))
            },
            |_, _| CrossEntropyBackward {
                logp: save(&logp.take().expect("the forward computed them")),
                targets: targets.data().to_vec(),
                ignore_index,
                count,
            },
        )
    }
}

static CROSS_ENTROPY: OpSpec = OpSpec::new("cross_entropy", "NllLoss").cast(Cast::Widen);

/// −(1/n) Σ log p\[target\] over the non-ignored rows.
fn nll<E: Element>(lp: &[E], targets: &[i64], ignore: i64, count: usize) -> Vec<E> {
    let c = lp.len() / targets.len().max(1);
    let mut s = E::C::zero();
    for (r, &t) in targets.iter().enumerate() {
        if t != ignore {
            s += lp[r * c + t as usize].to_c();
        }
    }
    vec![E::from_c(-s / <E::C as Real>::c(count as f64))]
}

struct CrossEntropyBackward {
    logp: Tensor,
    targets: Vec<i64>,
    ignore_index: i64,
    count: usize,
}

fn grad<E: Element>(g: &[E], lp: &[E], targets: &[i64], ignore: i64, count: usize) -> Vec<E> {
    let c = lp.len() / targets.len().max(1);
    let scale = g[0].to_c() / <E::C as Real>::c(count as f64);
    let mut out = vec![E::default(); lp.len()];
    // Row by row on the kernels' threads; e^logp by the kernels' vectorised exp.
    crate::cpu::rows_mut(&mut out, c, |r, row| {
        let t = targets[r];
        if t == ignore {
            return;
        }
        let lp = &lp[r * c..(r + 1) * c];
        crate::cpu::simd(
            #[inline(always)]
            || {
                for (o, v) in row.iter_mut().zip(lp) {
                    *o = E::from_c(v.to_c().exp_k() * scale);
                }
            },
        );
        let p = lp[t as usize].to_c().exp_k();
        row[t as usize] = E::from_c((p - E::C::one()) * scale);
    });
    out
}

impl Backward for CrossEntropyBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let out = zip_buffers!("cross_entropy_backward", &*g.data(), &*self.logp.data(), gv, lp =>
            grad(gv, lp, &self.targets, self.ignore_index, self.count).into_buffer())?;
        Ok(smallvec![Some(Tensor::activation(
            out,
            self.logp.shape().into()
        ))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.logp);
    }
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.targets.as_slice())
    }
}
