//! Rotary position embedding (RoPE) at explicit positions. For position p and frequency fᵢ the
//! pair (a, b) of dims i turns by θ = p·fᵢ: (a·cos θ − b·sin θ, b·cos θ + a·sin θ). Pairs are
//! either the two **halves** of the rotary dims (i and i + r/2: Llama, Qwen2's `rotate_half`)
//! or **interleaved** neighbours (2i and 2i + 1: GLM, ChatGLM3); dims past the rotary ones pass
//! through. The backward is the turn by −θ. Saves: the positions (not a tensor).
//! θ is computed as transformers does: fᵢ and p as f32, one f32 product; cos and sin of it.

use crate::autograd::{Backward, Grads};
pub use crate::backend::RopeLayout;
use crate::backend::{BackendStorage, Turn};
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::shape::Shape;
use crate::tensor::Tensor;
use smallvec::smallvec;

static ROPE: OpSpec = OpSpec::new("rope", "Rope");

/// The frequencies of a rotary embedding over its first `2·inv_freq.len()` dims.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// fᵢ for each pair (transformers' `inv_freq`, f32).
    pub inv_freq: Vec<f32>,
    /// How dims pair.
    pub layout: RopeLayout,
}

impl Rope {
    /// transformers' default frequencies for base `theta` over `rotary_dim` dims:
    /// fᵢ = 1 / θ^(2i / r), computed in f32 as `1.0 / (base ** (arange(0, r, 2).float() / r))`.
    pub fn new(theta: f64, rotary_dim: usize, layout: RopeLayout) -> Result<Rope> {
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || !(theta.is_finite() && theta > 0.0) {
            return Err(Error::invalid(
                "rope",
                format!(
                    "needs an even rotary dim ≥ 2 and a positive base, got {rotary_dim} and {theta}"
                ),
            ));
        }
        let base = theta as f32;
        let inv_freq = (0..rotary_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / rotary_dim as f32))
            .collect();
        Ok(Rope { inv_freq, layout })
    }

    /// The rotary dims.
    pub fn rotary_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// cos θ and sin θ for position `p` and each pair.
    fn angles(&self, p: i64) -> Vec<(f32, f32)> {
        self.inv_freq
            .iter()
            .map(|f| {
                let theta = f64::from(p as f32 * f);
                (theta.cos() as f32, theta.sin() as f32)
            })
            .collect()
    }
}

/// (cos θ, sign·sin θ) per position index and pair, in f32 (`sign` −1 turns back).
fn table(rope: &Rope, positions: &[i64], sign: f32) -> Vec<(f32, f32)> {
    positions
        .iter()
        .flat_map(|&p| rope.angles(p))
        .map(|(c, s)| (c, s * sign))
        .collect()
}

impl Tensor {
    /// This `[B, H, T, D]` tensor with its first `rope.rotary_dim()` dims turned by `rope` at
    /// `positions` (`[B, T]`, or `[T]` for every batch row).
    pub fn rope(&self, rope: &Rope, positions: &Indices) -> Result<Tensor> {
        if self.rank() != 4 {
            return Err(Error::invalid(
                "rope",
                format!("needs a [B, H, T, D] tensor, got {:?}", self.shape()),
            ));
        }
        let (b, h, t, d) = (
            self.shape()[0],
            self.shape()[1],
            self.shape()[2],
            self.shape()[3],
        );
        if rope.rotary_dim() > d || rope.inv_freq.is_empty() {
            return Err(Error::invalid(
                "rope",
                format!("{} rotary dims do not fit a head of {d}", rope.rotary_dim()),
            ));
        }
        if positions.len() != t && positions.len() != b * t {
            return Err(Error::ShapeMismatch {
                op: "rope",
                lhs: self.shape().to_vec(),
                rhs: positions.shape().to_vec(),
            });
        }
        let pos = positions.data().to_vec();
        dispatch::apply(
            &ROPE,
            &[self],
            |x| {
                let turn = Turn {
                    d,
                    heads: h,
                    t,
                    per_row: pos.len() == t,
                    pairs: rope.inv_freq.len(),
                    layout: rope.layout,
                };
                let out = x[0].data().rotate(&table(rope, &pos, 1.0), turn)?;
                Ok(Forward::from(Tensor::activation(out, x[0].shape().into())))
            },
            |x, _| RopeBackward {
                shape: x[0].shape().into(),
                rope: rope.clone(),
                positions: pos.clone(),
            },
        )
    }
}

struct RopeBackward {
    shape: Shape,
    rope: Rope,
    positions: Vec<i64>,
}

impl Backward for RopeBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (h, t, d) = (self.shape[1], self.shape[2], self.shape[3]);
        let turn = Turn {
            d,
            heads: h,
            t,
            per_row: self.positions.len() == t,
            pairs: self.rope.inv_freq.len(),
            layout: self.rope.layout,
        };
        let out = g
            .data()
            .rotate(&table(&self.rope, &self.positions, -1.0), turn)?;
        Ok(smallvec![Some(Tensor::activation(out, self.shape.clone()))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.positions.as_slice())
    }
}
