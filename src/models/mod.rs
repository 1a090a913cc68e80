//! Small models used by the benchmarks, the checkpointing story and tests.

pub mod repro;
pub mod residual_mlp;
pub mod transformer;

pub use repro::{ReproConfig, ReproModel};
pub use residual_mlp::ResidualMlp;
pub use transformer::{Transformer, TransformerConfig};
