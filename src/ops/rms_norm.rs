//! RMS normalisation over the last dim (Llama, Qwen2, GLM): r = 1/√(mean(x²) + ε), x̂ = x·r,
//! y = x̂·w. With gy = g·w and means over the row: dx = r·(gy − x̂·mean(gy·x̂)), dw = Σ_rows g·x̂.
//! Saves: the input, the per-row r and the weight.
//! Row statistics and results are computed in f64 and rounded once (transformers computes the
//! statistics in f32, then multiplies by the weight in the input's dtype).

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::tensor::Tensor;
use smallvec::smallvec;

static RMS_NORM: OpSpec = OpSpec::new("rms_norm", "RmsNorm").cast(Cast::Widen);

impl Tensor {
    /// RMS norm over the last dim with weight `[d]`: `x · rsqrt(mean(x²) + eps) · w`.
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        let d = *self
            .shape()
            .last()
            .ok_or_else(|| Error::invalid("rms_norm", "input needs at least 1 dim"))?;
        if weight.shape() != [d] {
            return Err(Error::ShapeMismatch {
                op: "rms_norm",
                lhs: self.shape().to_vec(),
                rhs: weight.shape().to_vec(),
            });
        }
        if d == 0 {
            return Err(Error::invalid(
                "rms_norm",
                "cannot normalise over an empty dim",
            ));
        }
        let rstd = std::cell::RefCell::new(None);
        dispatch::apply(
            &RMS_NORM,
            &[self, weight],
            |t| {
                same_dtype("rms_norm", t[0], t[1])?;
                let (y, rs) = t[0].data().rms_norm(&t[1].data(), d, eps)?;
                let rows = t[0].numel() / d;
                *rstd.borrow_mut() = Some(Tensor::activation(rs, smallvec![rows]));
                Ok(Forward::from(Tensor::activation(y, t[0].shape().into())))
            },
            |t, _| RmsNormBackward {
                x: save(t[0]),
                rstd: save(&rstd.take().expect("the forward computed them")),
                weight: save(t[1]),
            },
        )
    }
}

struct RmsNormBackward {
    x: Tensor,
    rstd: Tensor,
    weight: Tensor,
}

impl Backward for RmsNormBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let d = *self.x.shape().last().expect("checked in forward");
        let (dx, dw) =
            g.data()
                .rms_norm_grad(&self.x.data(), &self.rstd.data(), &self.weight.data(), d)?;
        Ok(smallvec![
            needs[0].then(|| Tensor::activation(dx, self.x.shape().into())),
            needs[1].then(|| Tensor::activation(dw, smallvec![d]))
        ])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.x);
        f(&self.rstd);
        f(&self.weight);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
