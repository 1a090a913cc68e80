//! # rewind-lab
//!
//! Everything the `rewind` command line runs, built on the engine's public API alone: the
//! checkpointing story ([`repro`]), data without a download ([`data`]), a small transformer
//! and the repro model ([`models`]), the trainer with exact save/resume ([`train`]), and the
//! measurements behind `rewind bench`, `bench-core` and `memory` ([`mod@bench`]).
#![warn(missing_docs)]

pub mod alloc_counter;
pub mod bench;
pub mod data;
pub mod dist;
pub mod eval;
pub mod generate;
pub mod memory_model;
pub mod models;
pub mod repro;
pub mod repro_model;
pub mod train;

/// Bytes in MiB (2²⁰ bytes), the unit every report and table prints.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Bytes as `"12.3 MiB"`.
pub fn fmt_mib(bytes: usize) -> String {
    format!("{:.1} MiB", mib(bytes))
}
