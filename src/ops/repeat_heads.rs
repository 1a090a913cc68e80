//! Grouped-query attention's key/value sharing: `[B, H, T, D]` → `[B, H·n, T, D]`, head j of
//! the output being head ⌊j/n⌋ of the input (transformers' `repeat_kv`). The gradient of an
//! input head is the sum of its n copies' gradients, in head order. Saves: nothing.

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, Copy2d};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::shape::{self, Shape};
use crate::tensor::Tensor;
use smallvec::smallvec;

static REPEAT_HEADS: OpSpec = OpSpec::new("repeat_heads", "RepeatKv");

impl Tensor {
    /// Each head of this `[B, H, T, D]` tensor `n` times in a row: `[B, H·n, T, D]`.
    pub fn repeat_heads(&self, n: usize) -> Result<Tensor> {
        if self.rank() != 4 || n == 0 {
            return Err(Error::invalid(
                "repeat_heads",
                format!(
                    "needs a [B, H, T, D] tensor and n ≥ 1, got {:?} and {n}",
                    self.shape()
                ),
            ));
        }
        if n == 1 {
            return Ok(self.clone());
        }
        let (b, h) = (self.shape()[0], self.shape()[1]);
        let per = self.shape()[2] * self.shape()[3];
        let mut out_shape: Shape = self.shape().into();
        out_shape[1] = h.checked_mul(n).ok_or_else(|| Error::ShapeTooLarge {
            op: "repeat_heads",
            shape: self.shape().to_vec(),
        })?;
        let len = shape::checked_numel("repeat_heads", &out_shape)?;
        dispatch::apply(
            &REPEAT_HEADS,
            &[self],
            |t| {
                let mut out = t[0].data().zeros(t[0].dtype(), len, "repeat_heads")?;
                for j in 0..n {
                    let block = Copy2d {
                        rows: b * h,
                        width: per,
                        src_stride: per,
                        src_at: 0,
                        dst_stride: n * per,
                        dst_at: j * per,
                    };
                    t[0].data().copy2d(&mut out, block, false)?;
                }
                Ok(Forward::from(Tensor::activation(out, out_shape.clone())))
            },
            |t, _| RepeatHeadsBackward {
                shape: t[0].shape().into(),
                n,
            },
        )
    }
}

struct RepeatHeadsBackward {
    shape: Shape,
    n: usize,
}

impl Backward for RepeatHeadsBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (bh, per) = (self.shape[0] * self.shape[1], self.shape[2] * self.shape[3]);
        // Each group of n repeated heads summed into one, in head order.
        let out = g
            .data()
            .sum(Some((bh, self.n, per)), 1.0, "repeat_heads_backward")?;
        Ok(smallvec![Some(Tensor::activation(out, self.shape.clone()))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
