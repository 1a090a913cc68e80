//! masked_fill: y = value where mask ≠ 0, else x (attention masks). The mask broadcasts to x.
//! dx = g where mask = 0, else 0. Saves: the mask.

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::ops::{same_dtype, save};
use crate::shape;
use crate::tensor::Tensor;
use smallvec::smallvec;

impl Tensor {
    /// Replaces elements where `mask` (same dtype, broadcastable to `self`; nonzero = true)
    /// is set by `value`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        dispatch::apply(
            &MASKED_FILL,
            &[self],
            |t| masked_fill_kernel(t[0], mask, value).map(Forward::from),
            |_, _| MaskedFillBackward { mask: save(mask) },
        )
    }
}

static MASKED_FILL: OpSpec = OpSpec::new("masked_fill", "MaskedFill");

/// `x` with `value` where `mask` is set, not recorded.
fn masked_fill_kernel(x: &Tensor, mask: &Tensor, value: f64) -> Result<Tensor> {
    same_dtype("masked_fill", x, mask)?;
    let out_shape = shape::broadcast("masked_fill", x.shape(), mask.shape())?;
    if out_shape.as_slice() != x.shape() {
        return Err(Error::ShapeMismatch {
            op: "masked_fill",
            lhs: x.shape().to_vec(),
            rhs: mask.shape().to_vec(),
        });
    }
    let (xs, ms) = (x.shape(), mask.shape());
    let out = x.data().masked_fill(&mask.data(), (xs, ms), value)?;
    Ok(Tensor::activation(out, out_shape))
}

struct MaskedFillBackward {
    mask: Tensor,
}

impl Backward for MaskedFillBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (gs, ms) = (g.shape(), self.mask.shape());
        let out = g.data().masked_fill(&self.mask.data(), (gs, ms), 0.0)?;
        Ok(smallvec![Some(Tensor::activation(out, gs.into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.mask);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
