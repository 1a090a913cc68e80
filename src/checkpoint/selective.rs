//! Selective checkpointing: a non-reentrant segment whose policy decides, per op output that
//! backward needs, whether it is kept from the forward or recomputed (PyTorch's
//! `create_selective_checkpoint_contexts` with `CheckpointPolicy`, JAX's `jax.checkpoint`
//! policies). Kept matmul outputs are not recomputed; the recomputation stops once every
//! dropped output is back, so a policy that keeps the matmuls recomputes only the cheap ops
//! between them. Gradients are bit-identical to storing everything.

use super::segment::{Body, CheckpointMode, checkpoint, non_reentrant};
use crate::error::{Error, Result};
use crate::tape::{is_grad_enabled, recompute};
use crate::tensor::Tensor;
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
    /// Whether the op is a matrix product (its declaration's [`OpSpec::dot`](crate::ops::spec::OpSpec::dot)).
    pub dot: bool,
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
            SavePolicy::SaveMatmuls => o.dot,
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
    recompute::name(t, name);
    t.clone()
}

/// Runs `body` on `inputs` as a checkpoint segment named `name` under `policy`. The body's
/// ops are recorded as without checkpointing; when it returns, the saved outputs the policy
/// drops are freed, and backward recomputes them (once, before the first of the segment's
/// entries runs). [`SavePolicy::RecomputeAll`] is plain [`checkpoint`]; any other policy needs
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
    let (out, seg) = non_reentrant(name, &args, body, false)?;
    let protect: Vec<&Tensor> = args.iter().chain([&out]).collect();
    let keep: Vec<bool> = seg
        .slots(&protect)
        .iter()
        .enumerate()
        .map(|(index, s)| {
            policy
                .decide(&OpOutput {
                    op: s.op.name,
                    dot: s.op.dot,
                    index,
                    name: s.name.as_deref(),
                    shape: &s.shape,
                    bytes: s.saved_bytes,
                })
                .saves()
        })
        .collect();
    seg.evict(&keep, &protect);
    Ok(out)
}
