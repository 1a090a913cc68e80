//! The version counter: every storage counts its in-place changes; a tape entry records the
//! count of each tensor its backward saved (and of the parameters a checkpoint segment
//! captured), and backward refuses one changed since, with PyTorch's error text.

use super::backward::Backward;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::spec::OpSpec;
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::rc::Rc;

/// Where a saved tensor came from, for the error's `which is output 0 of …` part.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Producer {
    /// The op's own output.
    Output,
    /// The op's `k`-th input.
    Input(u8),
    /// Something else (a parameter a segment captured, an internal buffer): reported as a leaf.
    Other,
}

/// A saved tensor's version when it was saved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SavedVersion {
    version: u32,
    from: Producer,
}

/// The version of `t`, saved by the op with `inputs` and `output`, and where it came from.
pub(crate) fn saved_version(t: &Tensor, inputs: &[&Tensor], output: &Tensor) -> SavedVersion {
    let from = if Rc::ptr_eq(t.storage(), output.storage()) {
        Producer::Output
    } else {
        inputs
            .iter()
            .position(|i| Rc::ptr_eq(i.storage(), t.storage()))
            .map_or(Producer::Other, |k| Producer::Input(k as u8))
    };
    SavedVersion {
        version: t.storage().version(),
        from,
    }
}

/// Appends the versions of the parameters `bw` captured (after those of what it saved, in
/// [`Backward::visit_saved`] order: the order [`check`] reads them in).
pub(crate) fn push_captured(bw: &dyn Backward, out: &mut SmallVec<[SavedVersion; 2]>) {
    for p in bw.captured() {
        out.push(SavedVersion {
            version: p.storage().version(),
            from: Producer::Other,
        });
    }
}

/// Fails with PyTorch's error when a tensor `bw` saved changed since [`record`].
/// `op` is the entry's op; `input_op(k)` the op that produced its `k`-th input, if recorded.
pub(crate) fn check(
    bw: &dyn Backward,
    recorded: &[SavedVersion],
    op: &'static OpSpec,
    input_op: impl Fn(usize) -> Option<&'static OpSpec>,
) -> Result<()> {
    let mut err = None;
    let mut k = 0;
    let mut visit = |t: &Tensor| {
        if let Some(saved) = recorded.get(k)
            && err.is_none()
            && t.storage().version() != saved.version
        {
            let output_of = match saved.from {
                Producer::Output => Some(op),
                Producer::Input(i) => input_op(i as usize),
                Producer::Other => None,
            };
            err = Some(modified(t, output_of, saved.version));
        }
        k += 1;
    };
    bw.visit_saved(&mut visit);
    bw.captured().iter().for_each(&mut visit);
    err.map_or(Ok(()), Err)
}

/// PyTorch's error for `t`, saved at version `expected` and changed in place since;
/// `output_of` is the op that produced it (`None` for a leaf).
pub(crate) fn modified(t: &Tensor, output_of: Option<&'static OpSpec>, expected: u32) -> Error {
    Error::ModifiedInplace {
        tensor: pytorch_type(t),
        output_of: output_of.map(|o| o.torch.to_string()),
        version: t.storage().version(),
        expected,
    }
}

/// PyTorch's `torch.FloatTensor [2, 3]` for a tensor.
fn pytorch_type(t: &Tensor) -> String {
    let ty = match t.dtype() {
        DType::F16 => "HalfTensor",
        DType::BF16 => "BFloat16Tensor",
        DType::F32 => "FloatTensor",
        DType::F64 => "DoubleTensor",
    };
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    format!("torch.{ty} [{}]", dims.join(", "))
}
