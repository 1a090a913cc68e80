//! Grouped-query attention's key/value sharing: `[B, H, T, D]` → `[B, H·n, T, D]`, head j of
//! the output being head ⌊j/n⌋ of the input (transformers' `repeat_kv`). The gradient of an
//! input head is the sum of its n copies' gradients, in head order. Saves: nothing.

use crate::autograd::{Backward, Grads};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::shape::{self, Shape};
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::with_buffer;
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
                let out = with_buffer!(&*t[0].data(), v => {
                    let mut o = crate::cpu::with_capacity("repeat_heads", len)?;
                    for head in v.chunks(per.max(1)).take(b * h) {
                        for _ in 0..n {
                            o.extend_from_slice(head);
                        }
                    }
                    o.into_buffer()
                });
                Ok(Forward::from(Tensor::activation(out, out_shape.clone())))
            },
            |t, _| RepeatHeadsBackward {
                shape: t[0].shape().into(),
                n,
            },
        )
    }
}

/// Each group of `n` heads of `per` elements summed into one, in head order.
fn sum_groups<E: Element>(g: &[E], per: usize, n: usize) -> Vec<E> {
    let mut acc = Vec::with_capacity(g.len() / n.max(1));
    for group in g.chunks((per * n).max(1)) {
        for e in 0..per {
            let mut s = group[e].to_c();
            for j in 1..n {
                s += group[j * per + e].to_c();
            }
            acc.push(E::from_c(s));
        }
    }
    acc
}

struct RepeatHeadsBackward {
    shape: Shape,
    n: usize,
}

impl Backward for RepeatHeadsBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let per = self.shape[2] * self.shape[3];
        let out = with_buffer!(&*g.data(), gv => sum_groups(gv, per, self.n).into_buffer());
        Ok(smallvec![Some(Tensor::activation(out, self.shape.clone()))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
