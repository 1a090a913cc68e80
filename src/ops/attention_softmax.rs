//! The attention scores' softmax, fused: y = softmax(x·scale + mask) over the last dim of
//! scores `[B, H, T, T]`, with transformers' additive mask — 0 where query i may see key j (j ≤ i,
//! key j not padded), the dtype's lowest finite value elsewhere. The scale and the mask are
//! applied in the input's dtype exactly as `mul_scalar` then `add` would, and the softmax runs
//! in the compute type (f16 scores give f32 probabilities, as autocast's widened softmax; bf16
//! scores bf16 ones, as CPU autocast's), so
//! the result is bit for bit the unfused ops' without their three passes over the scores.
//! dx = scale · y ⊙ (g − Σ g⊙y), rounded to the input's dtype first as the unfused chain
//! rounds it. Saves: the output.

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, KeyMask, Rows};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::OpSpec;
use crate::tensor::Tensor;
use smallvec::smallvec;

static ATTENTION_SOFTMAX: OpSpec = OpSpec::new("attention_softmax", "Softmax");

/// The key mask of `key_mask` (`B·T` values, nonzero = padded, T ≥ `keys`) for `b` batch
/// rows, queries starting at `offset`.
pub(crate) fn key_mask_of(
    op: &'static str,
    key_mask: Option<&Tensor>,
    b: usize,
    keys: usize,
    offset: usize,
) -> Result<KeyMask> {
    let (padded, stride) = match key_mask {
        None => (None, keys),
        Some(m) if b > 0 && m.numel() % b == 0 && m.numel() / b >= keys => (
            Some(m.to_vec_f64().iter().map(|&v| v != 0.0).collect()),
            m.numel() / b,
        ),
        Some(m) => {
            return Err(Error::ShapeMismatch {
                op,
                lhs: vec![b, 1, 1, keys],
                rhs: m.shape().to_vec(),
            });
        }
    };
    Ok(KeyMask::new(padded, stride, offset))
}

impl Tensor {
    /// softmax(self·scale + mask) over the last dim of attention scores `[B, H, T, T]`: future
    /// keys hidden, and keys hidden where `key_mask` (`B·T` values, nonzero = padded) is set.
    /// f16 scores give f32 probabilities.
    pub fn attention_softmax(&self, scale: f64, key_mask: Option<&Tensor>) -> Result<Tensor> {
        self.attention_softmax_at(scale, key_mask, 0)
    }

    /// [`Tensor::attention_softmax`] for a block of queries: scores `[B, H, Tq, Tk]` of the
    /// queries at positions `offset..offset + Tq` against keys `0..Tk`, `key_mask` holding
    /// `B·T` values for some `T ≥ Tk`.
    pub fn attention_softmax_at(
        &self,
        scale: f64,
        key_mask: Option<&Tensor>,
        offset: usize,
    ) -> Result<Tensor> {
        let s = self.shape();
        if self.rank() != 4 {
            return Err(Error::invalid(
                "attention_softmax",
                format!("needs scores [B, H, Tq, Tk], got {s:?}"),
            ));
        }
        let (b, heads, tq, t) = (s[0], s[1], s[2], s[3]);
        let mask = key_mask_of("attention_softmax", key_mask, b, t, offset)?;
        let rows = Rows { heads, tq, t };
        let dtype = self.dtype();
        dispatch::apply(
            &ATTENTION_SOFTMAX,
            &[self],
            |x| {
                let out = x[0].data().attention_softmax(rows, &mask, scale)?;
                Ok(Forward::from(Tensor::activation(out, x[0].shape().into())))
            },
            |_, y| AttentionSoftmaxBackward {
                y: save(y),
                t,
                scale,
                dtype,
            },
        )
    }
}

struct AttentionSoftmaxBackward {
    /// Saves: the output.
    y: Tensor,
    t: usize,
    scale: f64,
    /// The scores' dtype, the gradient's.
    dtype: DType,
}

impl Backward for AttentionSoftmaxBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let out =
            g.data()
                .attention_softmax_grad(&self.y.data(), (self.t, self.scale), self.dtype)?;
        Ok(smallvec![Some(Tensor::activation(out, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.y);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
