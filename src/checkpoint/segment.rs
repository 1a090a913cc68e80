//! A checkpoint segment as one tape entry. Forward runs the body keeping nothing inside it;
//! backward restores the generator and autocast state of the forward, reruns the body on a child tape with
//! grad on, backpropagates through it (parameters used inside get their gradients there) and
//! frees everything it recomputed. Saves: the explicit inputs.

use crate::autograd::{Backward, Grads, sweep};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{autocast, save};
use crate::rng::{self, GeneratorState};
use crate::shape::Shape;
use crate::tape::{
    self, ChildKind, EnableGradGuard, NoGradGuard, SavedMeta, is_grad_enabled, record_if,
};
use crate::tensor::Tensor;
use crate::warnings;
use std::rc::Rc;

/// The body of a segment: recomputable from its explicit inputs (parameters it uses are
/// captured, as in PyTorch).
pub type Body = Rc<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// How a segment decides whether its output requires grad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointMode {
    /// PyTorch's `use_reentrant=True`: only explicit inputs count; captured parameters do not.
    Reentrant,
    /// PyTorch's `use_reentrant=False` (rewind's default): the graph is recorded as usual, so a
    /// trainable parameter inside makes the output require grad.
    #[default]
    NonReentrant,
}

/// PyTorch's warning when no explicit input of a reentrant segment requires grad.
pub const NO_INPUT_REQUIRES_GRAD_WARNING: &str =
    "None of the inputs have requires_grad=True. Gradients will be None";
/// PyTorch's error when a reentrant recomputation produced no output that requires grad.
pub const NOT_NECESSARY_MSG: &str =
    "none of output has requires_grad=True, this checkpoint() is not necessary";

/// Runs `body` on `inputs` as a checkpoint segment named `name`.
pub fn checkpoint(
    name: &str,
    mode: CheckpointMode,
    inputs: &[&Tensor],
    body: Body,
) -> Result<Tensor> {
    let args: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    if !is_grad_enabled() {
        return body(&args);
    }
    let rng_state = rng::get_state();
    let any_input = inputs.iter().any(|t| t.requires_grad());
    // A probe tape runs the body with grad on but keeps nothing: it tells whether the output
    // requires grad, which parameters the body captures, and what its ops save.
    let probe = tape::push_child_tape(ChildKind::Probe);
    let out = body(&args);
    let report = tape::pop_child_tape(probe);
    let out = out?;
    let captured: Vec<Tensor> = report
        .touched
        .into_iter()
        .filter(|p| !inputs.iter().any(|t| t.same_handle(p)))
        .collect();
    let output_requires_grad = match mode {
        CheckpointMode::Reentrant => any_input,
        CheckpointMode::NonReentrant => out.requires_grad(),
    };
    if !output_requires_grad {
        let upstream = Tensor::merged_cuts(inputs.iter().copied().chain([&out]));
        let detached = out.detach();
        if mode == CheckpointMode::Reentrant {
            warnings::warn(NO_INPUT_REQUIRES_GRAD_WARNING);
            detached.set_cuts(Some(Tensor::new_cut(upstream, name, &captured)));
        } else {
            detached.set_cuts(upstream);
        }
        return Ok(detached);
    }
    let output = Tensor::from_parts(out.storage().clone(), out.shape().into(), false);
    let requires: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let name = name.to_string();
    Ok(record_if(true, "checkpoint", inputs, output, |y| {
        SegmentBackward {
            name,
            mode,
            body,
            inputs: args.iter().map(save).collect(),
            requires,
            rng_state,
            autocast: autocast::autocast_dtype(),
            out_shape: y.shape().into(),
            out_dtype: y.dtype(),
            meta: report.meta,
            captured,
        }
    }))
}

struct SegmentBackward {
    name: String,
    mode: CheckpointMode,
    body: Body,
    /// Saves: the explicit inputs (detached).
    inputs: Vec<Tensor>,
    requires: Vec<bool>,
    rng_state: GeneratorState,
    autocast: Option<DType>,
    out_shape: Shape,
    out_dtype: DType,
    meta: Vec<SavedMeta>,
    captured: Vec<Tensor>,
}

impl SegmentBackward {
    fn recompute(&self, g: &Tensor, child: u32) -> Result<Vec<Tensor>> {
        let stand_ins: Vec<Tensor> = self
            .inputs
            .iter()
            .zip(&self.requires)
            .map(|(t, &r)| t.detach().requires_grad_(r))
            .collect::<Result<_>>()?;
        let out = (self.body)(&stand_ins)?;
        if out.shape() != self.out_shape.as_slice() || out.dtype() != self.out_dtype {
            return Err(Error::Checkpoint(format!(
                "torch.utils.checkpoint: segment `{}` recomputed an output of shape {:?} ({:?}) but the forward produced {:?} ({:?})",
                self.name,
                out.shape(),
                out.dtype(),
                self.out_shape,
                self.out_dtype
            )));
        }
        if self.mode == CheckpointMode::NonReentrant {
            self.check_saved(&tape::child_meta(child)?)?;
        }
        if !out.requires_grad() {
            return Err(Error::Checkpoint(NOT_NECESSARY_MSG.to_string()));
        }
        match out.node() {
            None => out.accumulate_grad(g.clone())?,
            Some(id) => {
                if !sweep(&[(id, g.clone())], false)?.is_empty() {
                    return Err(Error::Checkpoint(format!(
                        "segment `{}` uses a tensor from outside that requires grad and is not a leaf; pass it as an explicit input",
                        self.name
                    )));
                }
            }
        }
        Ok(stand_ins)
    }

    fn check_saved(&self, recomputed: &[SavedMeta]) -> Result<()> {
        if recomputed.len() != self.meta.len() {
            return Err(Error::Checkpoint(format!(
                "torch.utils.checkpoint: A different number of tensors was saved during the original forward and recomputation.\nNumber of tensors saved during forward: {}\nNumber of tensors saved during recomputation: {}",
                self.meta.len(),
                recomputed.len()
            )));
        }
        if let Some((i, (a, b))) = self
            .meta
            .iter()
            .zip(recomputed)
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            return Err(Error::Checkpoint(format!(
                "torch.utils.checkpoint: Recomputed values for the following tensors have different metadata than during the forward pass.\ntensor at position {i}:\nsaved metadata: {a:?}\nrecomputed metadata: {b:?}"
            )));
        }
        Ok(())
    }
}

impl Backward for SegmentBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let _grad_on = EnableGradGuard::new();
        let now = rng::get_state();
        rng::set_state(self.rng_state);
        let child = tape::push_child_tape(match self.mode {
            CheckpointMode::NonReentrant => ChildKind::RecordAndList,
            CheckpointMode::Reentrant => ChildKind::Record,
        });
        let stand_ins = {
            let _ac = autocast::autocast(self.autocast);
            self.recompute(g, child)
        };
        tape::pop_child_tape(child);
        rng::set_state(now);
        let _ng = NoGradGuard::new();
        Ok(stand_ins?
            .iter()
            .zip(needs)
            .map(|(s, &need)| if need { s.grad() } else { None })
            .collect())
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.inputs.iter().for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
    fn captured(&self) -> &[Tensor] {
        &self.captured
    }
}
