//! A checkpoint segment, in PyTorch's two modes.
//!
//! **Reentrant** (one tape entry): forward runs the body with grad off and keeps only the
//! explicit inputs; the output requires grad only if an input does. Backward restores the
//! generator and autocast state of the forward, reruns the body on a child tape with grad on,
//! backpropagates through that rerun (captured parameters get their gradients there) and
//! frees it. Saves: the explicit inputs.
//!
//! **Non-reentrant**: the body records as usual, so its graph is the forward's, but the
//! tensors its ops save are packed ([`crate::tape::recompute`]): backward reruns the body once
//! to bring them back. Saves: the explicit inputs.

use crate::autograd::sweep;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::spec::OpSpec;
use crate::ops::{autocast, save};
use crate::rng::{self, GeneratorState};
use crate::shape::Shape;
use crate::tape::recompute::{self, Recording, Rerun};
use crate::tape::{
    self, Backward, ChildTape, EnableGradGuard, Grads, NoGradGuard, is_grad_enabled, record_if,
};
use crate::tape::{stack, versions};
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

static CHECKPOINT: OpSpec = OpSpec::new("checkpoint", "Checkpoint");

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
    match mode {
        CheckpointMode::Reentrant => reentrant(name, inputs, args, body),
        CheckpointMode::NonReentrant => Ok(non_reentrant(name, &args, body, true)?.0),
    }
}

/// Runs a non-reentrant segment's body, packing what its ops save (`pack`) or recording
/// plainly for a selective policy to evict from afterwards. Returns the output and what the
/// forward recorded.
pub(super) fn non_reentrant(
    name: &str,
    args: &[Tensor],
    body: Body,
    pack: bool,
) -> Result<(Tensor, Rc<Recording>)> {
    let rerun = Box::new(Replay::new(body.clone(), args));
    let capture = recompute::capture(name, pack, Some(rerun));
    let out = body(args);
    let seg = capture.finish();
    Ok((out?, seg))
}

/// What backward needs to run a body again: its inputs (held for backward, so counted as
/// saved), and the generator and autocast state of its forward.
struct Replay {
    body: Body,
    inputs: Vec<Tensor>,
    /// Each input's version when saved, and the op that produced it (for PyTorch's error).
    versions: Vec<(u32, Option<&'static OpSpec>)>,
    requires: Vec<bool>,
    rng_state: GeneratorState,
    autocast: Option<DType>,
}

impl Replay {
    fn new(body: Body, args: &[Tensor]) -> Replay {
        // A trainable leaf is kept itself (PyTorch unpacks a saved leaf as the leaf: a backward
        // inside the rerun body reaches its `.grad`); anything else as what backward saves.
        let inputs: Vec<Tensor> = args
            .iter()
            .map(|t| {
                if t.is_leaf() && t.requires_grad() {
                    t.clone()
                } else {
                    save(t)
                }
            })
            .collect();
        inputs.iter().for_each(tape::retain_saved);
        Replay {
            body,
            inputs,
            versions: args.iter().map(|t| (t.version(), producer(t))).collect(),
            requires: args.iter().map(Tensor::requires_grad).collect(),
            rng_state: rng::get_state(),
            autocast: autocast::autocast_dtype(),
        }
    }

    /// The inputs as the body gets them again: trainable leaves themselves, other tensors as
    /// new handles that require grad as the forward's did, with no history. An input changed
    /// in place since the forward is refused with PyTorch's error.
    fn stand_ins(&self) -> Result<Vec<Tensor>> {
        for (t, &(v, op)) in self.inputs.iter().zip(&self.versions) {
            if t.version() != v {
                return Err(versions::modified(t, op, v));
            }
        }
        self.inputs
            .iter()
            .zip(&self.requires)
            .map(|(t, &r)| {
                if t.is_leaf() && t.requires_grad() {
                    Ok(t.clone())
                } else {
                    t.detach().requires_grad_(r)
                }
            })
            .collect()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.inputs.iter().for_each(tape::release_saved);
    }
}

/// The op that recorded `t`, when it is an op's output on a live tape.
fn producer(t: &Tensor) -> Option<&'static OpSpec> {
    let id = t.node()?;
    stack::with_tape(id.tape, |tape| {
        tape.entries
            .get(id.index as usize)
            .filter(|_| tape.owns(id))
            .map(|e| e.op)
    })
    .ok()
    .flatten()
}

/// Restores the generator state it replaced when dropped.
struct GeneratorScope(GeneratorState);

impl GeneratorScope {
    fn set(state: GeneratorState) -> GeneratorScope {
        let now = rng::get_state();
        rng::set_state(state);
        GeneratorScope(now)
    }
}

impl Drop for GeneratorScope {
    fn drop(&mut self) {
        rng::set_state(self.0);
    }
}

impl Rerun for Replay {
    fn rerun(&self) -> Result<()> {
        let _grad = EnableGradGuard::new();
        let _rng = GeneratorScope::set(self.rng_state);
        let _ac = autocast::autocast(self.autocast);
        (self.body)(&self.stand_ins()?).map(drop)
    }
}

fn reentrant(name: &str, inputs: &[&Tensor], args: Vec<Tensor>, body: Body) -> Result<Tensor> {
    let rng_state = rng::get_state();
    let autocast = autocast::autocast_dtype();
    let any_input = inputs.iter().any(|t| t.requires_grad());
    // Forward with grad off, as PyTorch's CheckpointFunction: a backward inside the body
    // finds nothing that requires grad. The probe lists the parameters the body captures.
    let (out, touched) = {
        let _ng = NoGradGuard::new();
        let probe = recompute::probe();
        let out = body(&args);
        (out, probe.finish())
    };
    let out = out?;
    let captured: Vec<Tensor> = touched
        .into_iter()
        .filter(|p| !inputs.iter().any(|t| t.same_handle(p)))
        .collect();
    if !any_input {
        warnings::warn(NO_INPUT_REQUIRES_GRAD_WARNING);
        let upstream = Tensor::merged_cuts(inputs.iter().copied().chain([&out]));
        let detached = out.detach();
        detached.set_cuts(Some(Tensor::new_cut(upstream, name, &captured)));
        return Ok(detached);
    }
    let output = Tensor::from_parts(out.storage().clone(), out.shape().into(), false);
    let requires: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let name = name.to_string();
    Ok(record_if(true, &CHECKPOINT, inputs, output, |y| {
        SegmentBackward {
            name,
            body,
            inputs: args.iter().map(save).collect(),
            requires,
            rng_state,
            autocast,
            out_shape: y.shape().into(),
            out_dtype: y.dtype(),
            captured,
        }
    }))
}

struct SegmentBackward {
    name: String,
    body: Body,
    /// Saves: the explicit inputs (detached).
    inputs: Vec<Tensor>,
    requires: Vec<bool>,
    rng_state: GeneratorState,
    autocast: Option<DType>,
    out_shape: Shape,
    out_dtype: DType,
    captured: Vec<Tensor>,
}

impl SegmentBackward {
    fn recompute(&self, g: &Tensor) -> Result<Vec<Tensor>> {
        let stand_ins: Vec<Tensor> = self
            .inputs
            .iter()
            .zip(&self.requires)
            .map(|(t, &r)| t.detach().requires_grad_(r))
            .collect::<Result<_>>()?;
        let out = {
            let _ac = autocast::autocast(self.autocast);
            (self.body)(&stand_ins)?
        };
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
        if !out.requires_grad() {
            return Err(Error::Checkpoint(NOT_NECESSARY_MSG.to_string()));
        }
        match out.node() {
            None => out.accumulate_grad(g.clone())?,
            Some(id) => backward_into_outer(sweep(&[(id, g.clone())], false, None)?)?,
        }
        Ok(stand_ins)
    }
}

/// PyTorch's reentrant backward is a nested `torch.autograd.backward` over the rerun: a
/// gradient that leaves the body through a captured tensor that is not a leaf (P-tuning's
/// prefix keys and values) goes on into the forward's graph there and then, freeing what it
/// passes through, so a second segment reaching the same part fails as PyTorch fails
/// ("backward through the graph a second time"). The outer tape's pending gradients are set
/// aside meanwhile: only this segment's gradient runs.
fn backward_into_outer(mut outer: Vec<(crate::tensor::NodeId, Tensor)>) -> Result<()> {
    while let Some(tape_id) = outer.first().map(|(id, _)| id.tape) {
        let (here, rest): (Vec<_>, Vec<_>) =
            outer.into_iter().partition(|(id, _)| id.tape == tape_id);
        let set_aside = stack::with_tape(tape_id, |t| {
            t.entries
                .iter_mut()
                .map(|e| e.grad.take())
                .collect::<Vec<_>>()
        })?;
        let swept = sweep(&here, false, None);
        stack::with_tape(tape_id, |t| {
            for (e, g) in t.entries.iter_mut().zip(set_aside) {
                if g.is_some() {
                    e.grad = g;
                }
            }
        })?;
        outer = rest;
        outer.extend(swept?);
    }
    Ok(())
}

impl Backward for SegmentBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let stand_ins = {
            let _grad_on = EnableGradGuard::new();
            let _rng = GeneratorScope::set(self.rng_state);
            let _child = ChildTape::push();
            self.recompute(g)?
        };
        let _ng = NoGradGuard::new();
        Ok(stand_ins
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
