//! The contract between an op and the tape: an op's backward half, what it saves, and the
//! gradients it returns. Everything else in the tape is built on these.

use crate::error::Result;
use crate::tensor::Tensor;
use smallvec::SmallVec;

/// Gradients for an op's inputs, in input order (`None` where not needed).
pub type Grads = SmallVec<[Option<Tensor>; 2]>;

/// The backward half of an op, holding exactly what its forward saved. What it saves is stated
/// by two required methods, so no op can leave its memory out of the tape's accounting.
pub trait Backward {
    /// Given dL/d(output), returns dL/d(input) for every input whose `needs` flag is set.
    fn backward(&self, grad: &Tensor, needs: &[bool]) -> Result<Grads>;
    /// [`Backward::backward`] when the graph is not kept for another backward (no
    /// `retain_graph`): an op may write its gradient over a saved tensor nothing else can see.
    fn backward_last(&self, grad: &Tensor, needs: &[bool]) -> Result<Grads> {
        self.backward(grad, needs)
    }
    /// Calls `f` on every tensor saved for backward: the tape counts their bytes, dumps them
    /// and checks their versions.
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor));
    /// Bytes of saved state that is not a tensor (argmax positions, token ids, masks).
    fn saved_other_bytes(&self) -> usize;
    /// Leaves that get gradients through this op without being its inputs (the parameters a
    /// reentrant checkpoint segment's body captures).
    fn captured(&self) -> &[Tensor] {
        &[]
    }
    /// Whether [`Backward::add_into`] may add this op's gradient in place (the sweep looks
    /// for the input's gradient only then: no cost to other ops).
    fn adds_in_place(&self) -> bool {
        false
    }
    /// For a one-input op whose gradient is mostly zeros (`narrow`): adds it into `acc`, the
    /// input's gradient so far (exclusively held, same shape and dtype), touching only what is
    /// not zero, and returns true. The default returns false: the sweep calls
    /// [`Backward::backward`] and adds the whole gradient.
    fn add_into(&self, _grad: &Tensor, _acc: &Tensor) -> Result<bool> {
        Ok(false)
    }
}

/// Brings back what checkpointing emptied from an entry's saved tensors (a segment's rerun).
pub(crate) trait Refill {
    /// Refills the segment's empty saved tensors (a no-op when none is empty).
    fn refill(&self) -> Result<()>;
}
