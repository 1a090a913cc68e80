//! Selective checkpointing: a non-reentrant segment whose policy decides, per op output that
//! backward needs, whether it is kept from the forward or recomputed (PyTorch's
//! `create_selective_checkpoint_contexts` with `CheckpointPolicy`, JAX's `jax.checkpoint`
//! policies). Kept matmul outputs are not recomputed; the recomputation stops once every
//! dropped output is back, so a policy that keeps the matmuls recomputes only the cheap ops
//! between them. Gradients are bit-identical to storing everything.

use super::segment::{Body, CheckpointMode, checkpoint};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::autocast;
use crate::rng::{self, GeneratorState};
use crate::storage::Storage;
use crate::tape::evict::{self, Refill, RefillPlan};
use crate::tape::{self, ChildKind, EnableGradGuard, is_grad_enabled};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

/// PyTorch's answer for one op output (`torch.utils.checkpoint.CheckpointPolicy`). In eager
/// mode `Must` and `Prefer` act alike, as in PyTorch; the planner may override `Prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointPolicy {
    /// Keep the output from the forward.
    MustSave,
    /// Keep it (a planner may drop it).
    PreferSave,
    /// Drop it and recompute it in backward.
    MustRecompute,
    /// Drop it (a planner may keep it).
    PreferRecompute,
}

impl CheckpointPolicy {
    fn saves(self) -> bool {
        matches!(
            self,
            CheckpointPolicy::MustSave | CheckpointPolicy::PreferSave
        )
    }
}

/// What a policy is asked about: one op output inside the body that backward needs.
#[derive(Debug, Clone, Copy)]
pub struct OpOutput<'a> {
    /// The op (`"linear"`, `"matmul"`, `"gelu"`, …).
    pub op: &'static str,
    /// Its position among the ops the body recorded (0 = first).
    pub index: usize,
    /// The name [`checkpoint_name`] gave it, if any.
    pub name: Option<&'a str>,
    /// Its shape.
    pub shape: &'a [usize],
    /// Its bytes.
    pub bytes: usize,
}

/// Which op outputs a segment keeps for backward; the others are recomputed.
#[derive(Clone, Default)]
pub enum SavePolicy {
    /// Keep nothing: recompute the whole body (plain non-reentrant checkpointing; JAX's
    /// `nothing_saveable`).
    #[default]
    RecomputeAll,
    /// Keep the outputs of `matmul` and `linear` (JAX's `dots_saveable`; PyTorch: a policy
    /// returning `MUST_SAVE` for `aten.mm`/`aten.addmm`).
    SaveMatmuls,
    /// Keep the outputs named by [`checkpoint_name`] with one of these names (JAX's
    /// `save_only_these_names`).
    SaveNames(Vec<String>),
    /// Keep the outputs at these positions among the ops the body records (a planner's choice).
    SaveIndices(Vec<usize>),
    /// Ask a function, as PyTorch's `policy_fn(ctx, op, *args, **kwargs)`.
    Custom(Rc<dyn Fn(&OpOutput<'_>) -> CheckpointPolicy>),
}

impl fmt::Debug for SavePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SavePolicy::RecomputeAll => f.write_str("RecomputeAll"),
            SavePolicy::SaveMatmuls => f.write_str("SaveMatmuls"),
            SavePolicy::SaveNames(n) => f.debug_tuple("SaveNames").field(n).finish(),
            SavePolicy::SaveIndices(i) => f.debug_tuple("SaveIndices").field(i).finish(),
            SavePolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl SavePolicy {
    /// The policy's answer for `o`.
    pub fn decide(&self, o: &OpOutput<'_>) -> CheckpointPolicy {
        let save = match self {
            SavePolicy::RecomputeAll => false,
            SavePolicy::SaveMatmuls => matches!(o.op, "matmul" | "linear"),
            SavePolicy::SaveNames(names) => o.name.is_some_and(|n| names.iter().any(|m| m == n)),
            SavePolicy::SaveIndices(keep) => keep.contains(&o.index),
            SavePolicy::Custom(f) => return f(o),
        };
        if save {
            CheckpointPolicy::MustSave
        } else {
            CheckpointPolicy::MustRecompute
        }
    }
}

/// PyTorch's error for a `context_fn` (a selective policy) under reentrant checkpointing.
pub const POLICY_NEEDS_NON_REENTRANT_MSG: &str = "Passing `context_fn`, `debug`, or `respect_saved_tensors_hooks` is only supported when use_reentrant=False.";

/// Names `t` for [`SavePolicy::SaveNames`] (JAX's `checkpoint_name`): returns `t` itself.
/// Outside a selective segment it does nothing.
pub fn checkpoint_name(t: &Tensor, name: &str) -> Tensor {
    evict::name(t, name);
    t.clone()
}

/// Runs `body` on `inputs` as a checkpoint segment named `name` under `policy`. The body's
/// ops are recorded as without checkpointing; afterwards the saved outputs the policy drops
/// are freed, and backward recomputes them (once, before the first of the segment's entries
/// runs). [`SavePolicy::RecomputeAll`] is plain [`checkpoint`]; any other policy needs
/// [`CheckpointMode::NonReentrant`], as in PyTorch.
pub fn checkpoint_with_policy(
    name: &str,
    mode: CheckpointMode,
    inputs: &[&Tensor],
    body: Body,
    policy: &SavePolicy,
) -> Result<Tensor> {
    if matches!(policy, SavePolicy::RecomputeAll) {
        return checkpoint(name, mode, inputs, body);
    }
    if mode == CheckpointMode::Reentrant {
        return Err(Error::Checkpoint(
            POLICY_NEEDS_NON_REENTRANT_MSG.to_string(),
        ));
    }
    let args: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    if !is_grad_enabled() {
        return body(&args);
    }
    let rng_state = rng::get_state();
    let autocast = autocast::autocast_dtype();
    evict::begin_capture()?;
    let out = body(&args);
    let cap = evict::end_capture().ok_or_else(|| {
        Error::Checkpoint("selective checkpoint: the capture was lost".to_string())
    })?;
    let out = out?;
    let keep: Vec<bool> = (0..cap.slots.len())
        .map(|k| {
            let s = &cap.slots[k];
            policy
                .decide(&OpOutput {
                    op: s.op,
                    index: k,
                    name: cap.name(k),
                    shape: &s.shape,
                    bytes: cap.saved_bytes(k),
                })
                .saves()
        })
        .collect();
    let protect: Vec<&Tensor> = args.iter().chain([&out]).collect();
    let requires: Vec<bool> = args.iter().map(|t| t.requires_grad()).collect();
    let segment = name.to_string();
    evict::evict(cap, &keep, &protect, |plan| {
        Rc::new(Rerun::new(
            segment, body, &args, requires, rng_state, autocast, plan,
        ))
    });
    Ok(out)
}

/// What backward needs to rerun a selective segment's body.
struct Rerun {
    name: String,
    body: Body,
    /// The explicit inputs, detached; counted as saved like a plain segment's.
    inputs: Vec<Tensor>,
    requires: Vec<bool>,
    rng_state: GeneratorState,
    autocast: Option<DType>,
    plan: Rc<RefillPlan>,
    done: Cell<bool>,
}

impl Rerun {
    fn new(
        name: String,
        body: Body,
        args: &[Tensor],
        requires: Vec<bool>,
        rng_state: GeneratorState,
        autocast: Option<DType>,
        plan: Rc<RefillPlan>,
    ) -> Rerun {
        let inputs: Vec<Tensor> = args.iter().map(Tensor::detach).collect();
        for t in &inputs {
            retain(t.storage());
        }
        Rerun {
            name,
            body,
            inputs,
            requires,
            rng_state,
            autocast,
            plan,
            done: Cell::new(false),
        }
    }
}

fn retain(s: &Storage) {
    if s.is_activation() {
        tape::memory_add(s.retain_saved());
    }
}

impl Drop for Rerun {
    fn drop(&mut self) {
        for t in &self.inputs {
            if t.storage().is_activation() {
                tape::memory_sub(t.storage().release_saved());
            }
        }
    }
}

impl Refill for Rerun {
    fn refill(&self) -> Result<()> {
        if self.done.get() || self.plan.missing() == 0 {
            return Ok(());
        }
        let _grad_on = EnableGradGuard::new();
        let now = rng::get_state();
        rng::set_state(self.rng_state);
        let stand_ins: Vec<Tensor> = self
            .inputs
            .iter()
            .zip(&self.requires)
            .map(|(t, &r)| t.detach().requires_grad_(r))
            .collect::<Result<_>>()?;
        let child = tape::push_child_tape(ChildKind::Probe);
        evict::begin_refill(self.plan.clone(), child);
        let ran = {
            let _ac = autocast::autocast(self.autocast);
            (self.body)(&stand_ins).map(drop)
        };
        let checked = evict::end_refill();
        tape::pop_child_tape(child);
        rng::set_state(now);
        match ran {
            Ok(()) | Err(Error::RecomputeStopped) => {}
            Err(e) => return Err(e),
        }
        checked.map_err(|e| match e {
            Error::Checkpoint(msg) => Error::Checkpoint(format!("segment `{}`: {msg}", self.name)),
            other => other,
        })?;
        self.done.set(true);
        Ok(())
    }
}
