//! dtype casts (between f16, bf16, f32 and f64): y = round(x); the gradient is cast back to x's dtype.
//! Saves: nothing.

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::tensor::Tensor;
use smallvec::smallvec;

impl Tensor {
    /// A copy in `dtype` (round to nearest); the same tensor when the dtype already matches.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let from = self.dtype();
        dispatch::apply(
            &CAST,
            &[self],
            |t| {
                let out = t[0].data().to_dtype(dtype)?;
                Ok(Forward::from(Tensor::activation(out, t[0].shape().into())))
            },
            |_, _| CastBackward { from },
        )
    }
}

static CAST: OpSpec = OpSpec::new("cast", "ToCopy");

struct CastBackward {
    from: DType,
}

impl Backward for CastBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        Ok(smallvec![Some(Tensor::activation(
            g.data().to_dtype(self.from)?,
            g.shape().into()
        ))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
