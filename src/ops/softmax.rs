//! softmax and log_softmax along one dim, numerically stabilised by the row max.
//! softmax: dx = y ⊙ (g − Σ g⊙y). log_softmax: dx = g − eʸ·Σ g. Both save their output.

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, Split};
use crate::error::Result;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::{Cast, OpSpec};
use crate::shape;
use crate::tensor::Tensor;
use smallvec::smallvec;

static SOFTMAX: OpSpec = OpSpec::new("softmax", "Softmax").cast(Cast::Widen);
static LOG_SOFTMAX: OpSpec = OpSpec::new("log_softmax", "LogSoftmax").cast(Cast::Widen);

impl Tensor {
    /// eˣ / Σ eˣ along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(&SOFTMAX, dim, false)
    }

    /// x − log Σ eˣ along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(&LOG_SOFTMAX, dim, true)
    }

    fn softmax_impl(&self, op: &'static OpSpec, dim: isize, log: bool) -> Result<Tensor> {
        let d = shape::dim(op.name, dim, self.rank())?;
        let split = if self.rank() == 0 {
            (1, 1, 1)
        } else {
            shape::split_at_axis(self.shape(), d)
        };
        dispatch::apply(
            op,
            &[self],
            |x| Ok(Forward::from(softmax_kernel(x[0], split, log)?)),
            |_, y| SoftmaxBackward {
                split,
                log,
                y: save(y),
            },
        )
    }
}

/// softmax or log_softmax of `x` over the middle of `split`, not recorded.
fn softmax_kernel(x: &Tensor, split: Split, log: bool) -> Result<Tensor> {
    let out = x.data().softmax(split, log)?;
    Ok(Tensor::activation(out, x.shape().into()))
}

struct SoftmaxBackward {
    split: Split,
    log: bool,
    /// Saves: the output.
    y: Tensor,
}

impl Backward for SoftmaxBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let out = g
            .data()
            .softmax_grad(&self.y.data(), self.split, self.log)?;
        Ok(smallvec![Some(Tensor::activation(out, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.y);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
