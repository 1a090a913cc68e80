//! Differentiable ops. Each file holds one op family: its declaration ([`spec::OpSpec`]: name,
//! PyTorch's name, autocast class, whether it is a product), the forward, the backward beside
//! it, and a `Saves:` line naming what the backward keeps. Every op reaches the tape through
//! `dispatch`.

pub(crate) mod attention;
pub mod attention_softmax;
pub mod autocast;
pub mod binary;
pub mod cast;
pub mod custom;
pub mod device;
pub(crate) mod dispatch;
pub mod dropout;
pub mod embedding;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod loss;
pub mod masked_fill;
pub mod matmul;
pub mod reduce;
pub mod repeat_heads;
pub mod rms_norm;
pub mod rope;
pub mod shape_ops;
pub mod silu;
pub mod softmax;
pub mod spec;
pub mod unary;

use crate::backend::Data;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    Ok(())
}

/// The saved tensor as a handle that carries no grad path (PyTorch's SavedVariable), so the
/// tape never keeps an output's own handle alive. Inside a non-reentrant checkpoint segment it
/// is an empty placeholder that backward refills ([`crate::tape::recompute::pack`]); an
/// autocast cast of a weight is a placeholder backward fills by casting the weight again.
pub(crate) fn save(t: &Tensor) -> Tensor {
    if let Some(recipe) = autocast::recipe_for(t) {
        return recipe;
    }
    crate::tape::recompute::pack(t)
}

/// Runs `f` on a saved tensor's elements, taken out of it, when nothing else can see them (no
/// other handle, an op's output, not a placeholder or a recipe): backward's last use of them
/// writes its gradient over them. `None` (and `f` not run) otherwise; on an error they are put
/// back. While taken they do not count as saved.
pub(crate) fn with_saved_taken<R>(
    t: &Tensor,
    f: impl FnOnce(&mut Data) -> Result<R>,
) -> Option<Result<(Data, R)>> {
    let s = t.storage();
    if !t.is_exclusive() || !s.is_activation() || s.is_pending() || s.is_recipe() {
        return None;
    }
    let (mut data, bytes) = s.take();
    crate::tape::memory_sub(bytes);
    Some(match f(&mut data) {
        Ok(r) => Ok((data, r)),
        Err(e) => {
            crate::tape::memory_add(s.restore(data));
            Err(e)
        }
    })
}
