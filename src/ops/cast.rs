//! dtype casts (f32 ↔ f16 ↔ f64): y = round(x); the gradient is cast back to x's dtype.
//! Saves: nothing.

use crate::autograd::{Backward, Grads};
use crate::dtype::DType;
use crate::error::Result;
use crate::tape::record;
use crate::tensor::Tensor;
use smallvec::smallvec;

impl Tensor {
    /// A copy in `dtype` (round to nearest); the same tensor when the dtype already matches.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let out = self.data().cast(dtype);
        let from = self.dtype();
        Ok(record(
            "cast",
            &[self],
            Tensor::activation(out, self.shape().into()),
            |_| CastBackward { from },
        ))
    }
}

struct CastBackward {
    from: DType,
}

impl Backward for CastBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        Ok(smallvec![Some(Tensor::activation(
            g.data().cast(self.from),
            g.shape().into()
        ))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
