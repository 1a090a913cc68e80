//! Gradient checkpointing: segments that keep only their inputs in forward and recompute
//! their body during backward, in PyTorch's reentrant mode (which reproduces the "does not
//! require grad" failure) and non-reentrant mode (the fix); selective segments whose policy
//! keeps some op outputs; plans that choose segments, and an op-level budget planner; and a
//! diagnosis of parameters that a segment cut off from the loss.

pub mod diagnose;
pub mod op_plan;
pub mod plan;
mod segment;
pub mod selective;

pub use diagnose::{Finding, diagnose};
pub use plan::{
    BlockCosts, Plan, Segment, Segmentation, checkpoint_sequential, revolve_forward_steps,
    run_blocks, run_blocks_with_policies, run_blocks_with_policy,
};
pub use segment::{
    Body, CheckpointMode, NO_INPUT_REQUIRES_GRAD_WARNING, NOT_NECESSARY_MSG, checkpoint,
};
pub use selective::{
    CheckpointPolicy, OpOutput, POLICY_NEEDS_NON_REENTRANT_MSG, SavePolicy, checkpoint_name,
    checkpoint_with_policy,
};
