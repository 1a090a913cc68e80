//! Layer normalisation over the last dim: x̂ = (x − μ)·r with r = 1/√(σ² + ε) (biased σ²),
//! y = x̂·w + b. With gy = g·w and means over the row:
//! dx = r·(gy − mean(gy) − x̂·mean(gy·x̂)), dw = Σ_rows g·x̂, db = Σ_rows g.
//! Saves: the input, the per-row mean and 1/σ (as PyTorch does), and the weight.
//! Row statistics and results are computed in f64 and rounded once, so a row with a large mean
//! and a small spread keeps its precision (PyTorch's f32 kernels lose some there).

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::tensor::Tensor;
use smallvec::smallvec;

static LAYER_NORM: OpSpec = OpSpec::new("layer_norm", "NativeLayerNorm").cast(Cast::Widen);

impl Tensor {
    /// Layer norm over the last dim with optional elementwise affine weight and bias `[d]`.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        let stats = std::cell::RefCell::new(None);
        dispatch::apply(
            &LAYER_NORM,
            &inputs,
            |t| {
                let (w, b) = (has_w.then(|| t[1]), has_b.then(|| t[t.len() - 1]));
                let (y, mean, rstd) = t[0].layer_norm_forward(w, b, eps)?;
                *stats.borrow_mut() = Some((mean, rstd));
                Ok(Forward::from(y))
            },
            |t, _| {
                let (mean, rstd) = stats.take().expect("the forward computed them");
                LayerNormBackward {
                    x: save(t[0]),
                    mean: save(&mean),
                    rstd: save(&rstd),
                    weight: has_w.then(|| save(t[1])),
                    has_bias: has_b,
                }
            },
        )
    }

    /// y, the row means and 1/σ.
    fn layer_norm_forward(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let d = *self
            .shape()
            .last()
            .ok_or_else(|| Error::invalid("layer_norm", "input needs at least 1 dim"))?;
        for p in weight.iter().chain(bias.iter()) {
            same_dtype("layer_norm", self, p)?;
            if p.shape() != [d] {
                return Err(Error::ShapeMismatch {
                    op: "layer_norm",
                    lhs: self.shape().to_vec(),
                    rhs: p.shape().to_vec(),
                });
            }
        }
        if d == 0 {
            return Err(Error::invalid(
                "layer_norm",
                "cannot normalise over an empty dim",
            ));
        }
        let (out, mean, rstd) = self.data().layer_norm(
            weight.map(|w| w.data()).as_deref(),
            bias.map(|b| b.data()).as_deref(),
            d,
            eps,
        )?;
        let rows = self.numel() / d;
        Ok((
            Tensor::activation(out, self.shape().into()),
            Tensor::activation(mean, smallvec![rows]),
            Tensor::activation(rstd, smallvec![rows]),
        ))
    }
}

struct LayerNormBackward {
    x: Tensor,
    mean: Tensor,
    rstd: Tensor,
    weight: Option<Tensor>,
    has_bias: bool,
}

impl Backward for LayerNormBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let d = *self.x.shape().last().expect("checked in forward");
        let (dx, dw, db) = g.data().layer_norm_grad(
            &self.x.data(),
            &self.rstd.data(),
            self.weight.as_ref().map(|w| w.data()).as_deref(),
            d,
            self.weight.is_some() || self.has_bias,
        )?;
        let mut out: Grads =
            smallvec![needs[0].then(|| Tensor::activation(dx, self.x.shape().into()))];
        if self.weight.is_some() {
            out.push(needs[1].then(|| Tensor::activation(dw, smallvec![d])));
        }
        if self.has_bias {
            out.push(needs[out.len()].then(|| Tensor::activation(db, smallvec![d])));
        }
        Ok(out)
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.x);
        f(&self.mean);
        f(&self.rstd);
        if let Some(w) = &self.weight {
            f(w);
        }
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
