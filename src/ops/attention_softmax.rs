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
use crate::backend::cpu_rows::{backward_row, forward_row};
use crate::dtype::{DType, Element, Real};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
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
        DType::BF16 => half::bf16::MIN.to_f64(),
        DType::F32 => f64::from(f32::MIN),
        DType::F64 => f64::MIN,
    }
}

/// Rows of up to this many keys are staged on the stack.
pub(crate) const STACK_ROW: usize = 1024;

/// Which keys a query may not see: those after it, and padded ones.
pub(crate) struct KeyMask {
    /// `[B·stride]`: key padded.
    padded: Option<Vec<bool>>,
    /// Keys per batch row in `padded`.
    stride: usize,
    /// The position of query 0.
    pub(crate) offset: usize,
}

impl KeyMask {
    /// The mask of `key_mask` (`B·T` values, nonzero = padded, T ≥ `keys`) for `b` batch rows.
    pub(crate) fn new(
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
        Ok(KeyMask {
            padded,
            stride,
            offset,
        })
    }

    /// Whether query position `i` of batch row `b` may not see key `j`.
    #[inline(always)]
    pub(crate) fn hides(&self, b: usize, i: usize, j: usize) -> bool {
        j > i || self.padded.as_ref().is_some_and(|p| p[b * self.stride + j])
    }
}

/// x·scale + (lowest if hidden, else 0), each step rounded to E as `mul_scalar` then `add`
/// round it.
#[inline(always)]
pub(crate) fn masked_score<E: Element>(x: E, s: E::C, low: E::C, hidden: bool) -> E::C {
    let scaled = E::from_c(x.to_c() * s).to_c();
    let add = if hidden { low } else { E::C::zero() };
    E::from_c(scaled + add).to_c()
}

/// Scores `[B, H, Tq, T]` as rows: which batch row and query position row r is.
struct Rows {
    heads: usize,
    tq: usize,
    t: usize,
}

impl Rows {
    fn row(&self, r: usize, mask: &KeyMask) -> (usize, usize) {
        (r / (self.heads * self.tq), mask.offset + r % self.tq)
    }
}

fn forward<E: Element>(x: &[E], rows: &Rows, mask: &KeyMask, scale: f64) -> Vec<E::C>
where
    E::C: Element<C = E::C>,
{
    let t = rows.t;
    let mut out = vec![E::C::default(); x.len()];
    let (s, low) = (E::C::c(scale), E::from_c(E::C::c(lowest(E::DTYPE))).to_c());
    crate::cpu::rows_mut(&mut out, t, |r, row| {
        let (b, i) = rows.row(r, mask);
        let x = &x[r * t..(r + 1) * t];
        let z = |j: usize| masked_score(x[j], s, low, mask.hides(b, i, j));
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
        let mask = KeyMask::new("attention_softmax", key_mask, b, t, offset)?;
        let rows = Rows { heads, tq, t };
        let dtype = self.dtype();
        dispatch::apply(
            &ATTENTION_SOFTMAX,
            &[self],
            |x| {
                let out = match &*x[0].data() {
                    Buffer::F16(v) => forward(v, &rows, &mask, scale).into_buffer(),
                    // bf16 scores give bf16 probabilities, as PyTorch's CPU autocast.
                    Buffer::BF16(v) => {
                        Buffer::F32(forward(v, &rows, &mask, scale)).cast(DType::BF16)
                    }
                    Buffer::F32(v) => forward(v, &rows, &mask, scale).into_buffer(),
                    Buffer::F64(v) => forward(v, &rows, &mask, scale).into_buffer(),
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
            (DType::BF16, gb @ Buffer::BF16(_), yb @ Buffer::BF16(_)) => {
                backward::<half::bf16>(&gb.to_f32_vec(), &yb.to_f32_vec(), t, s).into_buffer()
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
