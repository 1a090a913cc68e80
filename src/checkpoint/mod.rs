//! Gradient checkpointing: segments that keep only their inputs in forward and recompute
//! their body during backward, in PyTorch's reentrant mode (which reproduces the "does not
//! require grad" failure) and non-reentrant mode (the fix); plans that choose segments; and a
//! diagnosis of parameters that a segment cut off from the loss.

pub mod diagnose;
pub mod plan;
mod segment;

pub use diagnose::{Finding, diagnose};
pub use plan::{
    BlockCosts, Plan, Segment, Segmentation, checkpoint_sequential, revolve_forward_steps,
    run_blocks,
};
pub use segment::{
    Body, CheckpointMode, NO_INPUT_REQUIRES_GRAD_WARNING, NOT_NECESSARY_MSG, checkpoint,
};
