//! The lab's models: the repro model (the shape of the real failure) and a small decoder-only
//! transformer. The residual MLP of the benchmarks is the engine's [`rewind::nn::ResidualMlp`].

pub mod repro;
pub mod transformer;

pub use repro::{ReproConfig, ReproModel};
pub use transformer::{Transformer, TransformerConfig};
