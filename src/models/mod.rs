//! Small models used by the benchmarks, the checkpointing story and tests.

pub mod residual_mlp;

pub use residual_mlp::ResidualMlp;
