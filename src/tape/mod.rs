//! The tape: an append-only list of recorded ops (a Wengert list), one per thread, with child
//! tapes stacked on top for recomputation and scratch scopes.
//!
//! Entries are appended in execution order, so the list already is a topological order and
//! backward is a single reverse sweep ([`crate::autograd`]). Each entry names its op, its
//! inputs, its output and exactly what its backward saved; the bytes saved are accounted for
//! as entries are pushed and freed. One job per file:
//!
//! | file | job |
//! |---|---|
//! | `backward.rs` | the `Backward` trait an op implements, and its gradients |
//! | `graph.rs` | entries, reference counts, freeing |
//! | `stack.rs` | the thread's stack of tapes; a dying output handle |
//! | `child.rs` | child tapes and scratch scopes |
//! | `record.rs` | recording an op |
//! | `accounting.rs` | saved-bytes accounting |
//! | `versions.rs` | the version counter's check |
//! | `reach.rs` | which leaves a backward would reach |
//! | `recompute.rs` | packing and refilling under non-reentrant checkpointing |
//! | `grad_mode.rs`, `inspect.rs` | `no_grad`; reading the tape |

mod accounting;
pub(crate) use accounting::{memory_add, memory_sub};
mod backward;
mod child;
mod grad_mode;
pub(crate) mod graph;
mod inspect;
mod reach;
pub(crate) mod recompute;
mod record;
pub(crate) mod stack;
pub(crate) mod versions;

pub use accounting::{peak_saved_bytes, reset_peak_saved_bytes, saved_bytes};
pub(crate) use accounting::{release as release_saved, retain as retain_saved};
pub(crate) use backward::Refill;
pub use backward::{Backward, Grads};
pub(crate) use child::ChildTape;
pub use child::scratch;
pub use grad_mode::{EnableGradGuard, NoGradGuard, is_grad_enabled, no_grad};
pub use inspect::{EntryInfo, dump, entries, live_entries};
pub(crate) use reach::reachable_leaves;
pub use record::clear;
pub(crate) use record::{needed, record, record_if};
