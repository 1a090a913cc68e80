//! The dispatch point: every op's call reaches the tape through [`apply`], which casts the
//! inputs by the op's autocast class, hands a recomputation the output a selective policy kept
//! (or skips a product a stopped rerun does not need), computes, and records the op under its
//! declared name. An op file declares its [`OpSpec`] and supplies a forward and a backward;
//! nothing else about it is written anywhere else.

use crate::autograd::Backward;
use crate::backend::{BackendStorage, Data};
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::autocast;
use crate::ops::spec::OpSpec;
use crate::shape::{Shape, numel};
use crate::tape::recompute::{self, Replay};
use crate::tape::{needed, record};
use crate::tensor::Tensor;
use smallvec::SmallVec;

/// What an op's forward hands the dispatch point.
pub(crate) enum Forward {
    /// The output, computed.
    Done(Tensor),
    /// A product's output shape and dtype and the computation itself, which a recomputation
    /// may replace by a kept output or skip.
    Product {
        shape: Shape,
        dtype: DType,
        compute: Box<dyn FnOnce() -> Result<Data>>,
    },
}

impl From<Tensor> for Forward {
    fn from(t: Tensor) -> Forward {
        Forward::Done(t)
    }
}

/// Runs op `spec` on `inputs`: `forward` computes from the (cast) inputs; `backward` builds
/// the backward from them and the output, saving what it needs through [`super::save`].
pub(crate) fn apply<B: Backward + 'static>(
    spec: &'static OpSpec,
    inputs: &[&Tensor],
    forward: impl FnOnce(&[&Tensor]) -> Result<Forward>,
    backward: impl FnOnce(&[&Tensor], &Tensor) -> B,
) -> Result<Tensor> {
    recompute::op_starts();
    let cast = autocast::cast_inputs(spec.cast, inputs)?;
    let refs: SmallVec<[&Tensor; 4]>;
    let xs: &[&Tensor] = match &cast {
        Some(c) => {
            refs = c.iter().collect();
            &refs
        }
        None => inputs,
    };
    let out = match forward(xs)? {
        Forward::Done(t) => t,
        Forward::Product {
            shape,
            dtype,
            compute,
        } => match recompute::replay(spec, needed(xs), &shape) {
            Replay::Kept(t) => t,
            Replay::Skip => {
                let zeros = xs[0].data().zeros(dtype, numel(&shape), spec.name)?;
                Tensor::activation(zeros, shape)
            }
            Replay::Compute => Tensor::activation(compute()?, shape),
        },
    };
    Ok(record(spec, xs, out, |y| backward(xs, y)))
}
