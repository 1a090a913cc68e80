//! The attention scores' softmax, fused: y = softmax(x·scale + mask) over the last dim of
//! scores `[B, H, T, T]`, with transformers' additive mask — 0 where query i may see key j (j ≤ i,
//! key j not padded), the dtype's lowest finite value elsewhere. The scale and the mask are
//! applied in the input's dtype exactly as `mul_scalar` then `add` would, and the softmax runs
//! in the compute type (f16 scores give f32 probabilities, as autocast's widened softmax), so
//! the result is bit for bit the unfused ops' without their three passes over the scores.
//! dx = scale · y ⊙ (g − Σ g⊙y), rounded to the input's dtype first as the unfused chain
//! rounds it. Saves: the output.

use crate::autograd::{Backward, Grads};
use crate::dtype::{DType, Element, Real};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::softmax::{backward_row, forward_row};
use crate::ops::spec::OpSpec;
use crate::storage::{Buffer, IntoBuffer};
use crate::tensor::Tensor;
use num_traits::Zero;
use smallvec::smallvec;

static ATTENTION_SOFTMAX: OpSpec = OpSpec::new("attention_softmax", "Softmax");

/// The lowest finite value of `dtype` (transformers' `torch.finfo(dtype).min`).
pub(crate) fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::F32 => f64::from(f32::MIN),
        DType::F64 => f64::MIN,
    }
}

/// Rows of up to this many keys are staged on the stack.
const STACK_ROW: usize = 1024;

/// Where the mask hides key j from query i of batch row b: j > i, or key j padded.
struct Mask {
    /// `[B·T]` for the mask's `T` keys: key padded.
    padded: Option<Vec<bool>>,
    /// Keys per batch row in `padded`.
    stride: usize,
    heads: usize,
    /// Queries per row block, and the position of the first.
    tq: usize,
    offset: usize,
    /// Keys per row.
    t: usize,
}

impl Mask {
    fn row(&self, r: usize) -> (usize, usize) {
        (r / (self.heads * self.tq), self.offset + r % self.tq)
    }

    fn hides(&self, b: usize, i: usize, j: usize) -> bool {
        j > i || self.padded.as_ref().is_some_and(|p| p[b * self.stride + j])
    }
}

fn forward<E: Element>(x: &[E], mask: &Mask, scale: f64) -> Vec<E::C>
where
    E::C: Element<C = E::C>,
{
    let t = mask.t;
    let mut out = vec![E::C::default(); x.len()];
    let (s, low) = (E::C::c(scale), E::from_c(E::C::c(lowest(E::DTYPE))).to_c());
    crate::cpu::rows_mut(&mut out, t, |r, row| {
        let (b, i) = mask.row(r);
        let x = &x[r * t..(r + 1) * t];
        let z = |j: usize| {
            let scaled = E::from_c(x[j].to_c() * s).to_c();
            let add = if mask.hides(b, i, j) {
                low
            } else {
                E::C::zero()
            };
            E::from_c(scaled + add).to_c()
        };
        if t <= STACK_ROW {
            let mut zs = [E::C::default(); STACK_ROW];
            for (j, v) in zs[..t].iter_mut().enumerate() {
                *v = z(j);
            }
            forward_row(&zs[..t], row, false);
        } else {
            let zs: Vec<E::C> = (0..t).map(z).collect();
            forward_row(&zs, row, false);
        }
    });
    out
}

fn backward<E: Element>(g: &[E::C], y: &[E::C], t: usize, scale: f64) -> Vec<E>
where
    E::C: Element<C = E::C>,
{
    let mut out = vec![E::default(); g.len()];
    let s = E::C::c(scale);
    crate::cpu::rows_mut(&mut out, t, |r, row| {
        let span = r * t..(r + 1) * t;
        let mut dz = vec![E::C::default(); t];
        backward_row(&g[span.clone()], &y[span], &mut dz, false);
        for (o, d) in row.iter_mut().zip(dz) {
            *o = E::from_c(E::from_c(d).to_c() * s);
        }
    });
    out
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
        let (padded, stride) = match key_mask {
            None => (None, t),
            Some(m) if b > 0 && m.numel() % b == 0 && m.numel() / b >= t => (
                Some(m.to_vec_f64().iter().map(|&v| v != 0.0).collect()),
                m.numel() / b,
            ),
            Some(m) => {
                return Err(Error::ShapeMismatch {
                    op: "attention_softmax",
                    lhs: vec![b, 1, 1, t],
                    rhs: m.shape().to_vec(),
                });
            }
        };
        let mask = Mask {
            padded,
            stride,
            heads,
            tq,
            offset,
            t,
        };
        let dtype = self.dtype();
        dispatch::apply(
            &ATTENTION_SOFTMAX,
            &[self],
            |x| {
                let out = match &*x[0].data() {
                    Buffer::F16(v) => forward(v, &mask, scale).into_buffer(),
                    Buffer::F32(v) => forward(v, &mask, scale).into_buffer(),
                    Buffer::F64(v) => forward(v, &mask, scale).into_buffer(),
                };
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
        let (t, s) = (self.t, self.scale);
        let out = match (self.dtype, &*g.data(), &*self.y.data()) {
            (DType::F16, Buffer::F32(g), Buffer::F32(y)) => {
                backward::<half::f16>(g, y, t, s).into_buffer()
            }
            (DType::F32, Buffer::F32(g), Buffer::F32(y)) => {
                backward::<f32>(g, y, t, s).into_buffer()
            }
            (DType::F64, Buffer::F64(g), Buffer::F64(y)) => {
                backward::<f64>(g, y, t, s).into_buffer()
            }
            (d, gb, _) => {
                return Err(Error::invalid(
                    "attention_softmax_backward",
                    format!("a {:?} gradient for {d:?} scores", gb.dtype()),
                ));
            }
        };
        Ok(smallvec![Some(Tensor::activation(out, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.y);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
