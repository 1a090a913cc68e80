//! Cross-entropy over class logits with PyTorch's `ignore_index` and mean reduction:
//! `L = −(1/n) Σ_{i: tᵢ≠ignore} log softmax(zᵢ)[tᵢ]`, n = number of non-ignored rows.
//! dL/dzᵢ = (softmax(zᵢ) − onehot(tᵢ))·g/n on non-ignored rows, 0 on ignored ones.
//! One fused op: each row's log Σ eᶻ (lse) is computed once; the loss reads zᵢ\[tᵢ\] − lse and
//! the backward e^(z − lse), so no log-probability tensor is ever written.
//! Saves: the logits, each row's lse and the targets; backward writes dL/dz over the logits
//! when nothing else holds them. Under autocast (f32 on both of PyTorch's lists) f16 and bf16
//! logits are read as they are: the loss comes in f32 and the gradient in the logits' dtype,
//! the bits of widening them first, but the saved logits stay half the size (PyTorch saves
//! the f32 copy: 206 MB for GPT-2 small's logits over 8 × 128 tokens, against 103 MB).

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, Targets};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::{Cast, OpSpec};
use crate::tensor::Tensor;
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
        let labels = Targets {
            labels: targets.data(),
            ignore: ignore_index,
            count,
        };
        let out = match self.dtype() {
            DType::F16 | DType::BF16 if crate::ops::autocast::autocast_dtype().is_some() => {
                DType::F32
            }
            d => d,
        };
        let lse = std::cell::RefCell::new(Vec::new());
        dispatch::apply(
            &CROSS_ENTROPY,
            &[self],
            |t| {
                let (out, l) = t[0].data().cross_entropy(c, labels, out)?;
                *lse.borrow_mut() = l;
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

struct CrossEntropyBackward {
    z: Tensor,
    lse: Vec<f64>,
    targets: Vec<i64>,
    ignore_index: i64,
    count: usize,
}

impl CrossEntropyBackward {
    fn labels(&self) -> Targets<'_> {
        Targets {
            labels: &self.targets,
            ignore: self.ignore_index,
            count: self.count,
        }
    }
}

impl Backward for CrossEntropyBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let out = g
            .data()
            .cross_entropy_grad(&self.z.data(), &self.lse, self.labels())?;
        Ok(smallvec![Some(Tensor::activation(
            out,
            self.z.shape().into()
        ))])
    }
    /// The gradient over the logits when nothing else holds them (a model's logits, dropped
    /// after the loss): one logits-sized buffer in backward, not two; the same bits.
    fn backward_last(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let over = crate::ops::with_saved_taken(&self.z, |z| {
            g.data()
                .cross_entropy_grad_in_place(z, &self.lse, self.labels())
        });
        match over {
            None => self.backward(g, needs),
            Some(r) => Ok(smallvec![Some(Tensor::activation(
                r?.0,
                self.z.shape().into()
            ))]),
        }
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.z);
    }
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.targets.as_slice()) + std::mem::size_of_val(self.lse.as_slice())
    }
}
