//! Recomputation under non-reentrant checkpointing: PyTorch's saved-tensor hooks, on this tape.
//!
//! While a segment's body runs forward, its ops record as usual, but what they save is packed
//! ([`pack`]): a tensor made inside the body is replaced by an empty placeholder, so the forward
//! keeps nothing of it. (A selective segment instead records plainly and, when the body
//! returns, evicts the outputs its policy drops: [`Recording::evict`].) When backward reaches an
//! entry whose saved tensors are empty, the segment reruns its body once on a child tape
//! ([`Refill`]): the n-th op the rerun records is the forward's n-th, so its output moves into
//! the placeholder without a copy; a packed tensor that is no op's output (statistics an op
//! made, a dropout mask) is copied in at the matching save. Backward then runs the forward's
//! graph, as PyTorch does: a body whose rerun computes other values still gets the forward's
//! graph, fed the recomputed tensors.
//!
//! The rerun is stopped, without an error crossing the body, once nothing is missing: matrix
//! products return zeros of their shape instead of computing and `backward()` does nothing
//! (when the forward itself called `backward()` inside the body, it stops where PyTorch does,
//! after as many saves as the forward made). What a rerun brought back is emptied again when
//! the backward that needed it ends, as PyTorch frees a recomputed tensor after its use.
//!
//! | file | job |
//! |---|---|
//! | `segment.rs` | what a segment's forward recorded, packed and evicted |
//! | `context.rs` | the thread's capture, rerun and probe contexts and their guards |
//! | `rerun.rs` | the rerun that refills a segment, and PyTorch's checks of it |

mod context;
mod rerun;
mod segment;

use crate::ops::spec::OpSpec;
use crate::tape::backward::Refill;
use crate::tape::stack;
use crate::tensor::Tensor;
use context::{ACTIVE, CONTEXTS, CaptureGuard, Context, OP_START, ProbeGuard, REFILLED};
use segment::SlotState;
pub(crate) use segment::{Recording, Rerun};
use std::rc::{Rc, Weak};

/// The dispatch point: an op starts (what it makes from now on, the body never sees).
#[inline]
pub(crate) fn op_starts() {
    if active() {
        OP_START.with(|c| c.set(crate::storage::next_birth()));
    }
}

/// Whether a capture, a rerun or a probe is under way on this thread.
#[inline]
pub(crate) fn active() -> bool {
    ACTIVE.with(|a| a.get())
}

/// Starts recording a segment's body on the current tape: `pack` packs what its ops save;
/// `body` reruns it in backward (`None` for a profile that is never backwarded).
pub(crate) fn capture(name: &str, pack: bool, body: Option<Box<dyn Rerun>>) -> CaptureGuard {
    let tape = stack::top_id();
    let enclosing = CONTEXTS.with(|s| {
        s.borrow().iter().rev().find_map(|c| match c {
            Context::Capture(seg) if seg.tape == tape => Some(seg.clone()),
            _ => None,
        })
    });
    let seg = Recording::new(name, pack, tape, body, enclosing);
    CaptureGuard::push(seg)
}

/// Starts listing the trainable leaves that ops use, recorded or not.
pub(crate) fn probe() -> ProbeGuard {
    ProbeGuard::push()
}

/// Called by the tape for every op while a context is set, before its backward is built:
/// lists the output (capture), moves a rerun's output into the storage it refills, replacing
/// `output` with a handle on that storage (rerun), or notes the leaves used (probe).
pub(crate) fn on_record(
    needed: bool,
    op: &'static OpSpec,
    inputs: &[&Tensor],
    output: &mut Tensor,
) {
    let tape = stack::top_id();
    CONTEXTS.with(|s| {
        for c in s.borrow_mut().iter_mut() {
            match c {
                Context::Capture(seg) if needed && seg.tape == tape => seg.list(op, inputs, output),
                Context::Refill(r) if needed && r.tape == tape => r.fill(op, output),
                Context::Probe(touched) => {
                    for t in inputs.iter().filter(|t| t.requires_grad() && t.is_leaf()) {
                        if !touched.iter().any(|u| u.same_handle(t)) {
                            touched.push((*t).clone());
                        }
                    }
                }
                _ => {}
            }
        }
    });
}

/// The segment that refills what an op recorded now saved: the innermost capture on the
/// current tape, when it has a body to rerun.
pub(crate) fn refill_for_record() -> Option<Rc<dyn Refill>> {
    let tape = stack::top_id();
    CONTEXTS.with(|s| match s.borrow().last() {
        Some(Context::Capture(seg)) if seg.tape == tape && seg.body.is_some() => {
            Some(seg.clone() as Rc<dyn Refill>)
        }
        _ => None,
    })
}

/// The handle an op saves for backward (PyTorch's pack hook): a placeholder for a tensor made
/// inside the body of the segment being captured, else `t` detached. In a rerun it checks the
/// save against the forward's and refills the packed tensor that is no op's output.
pub(crate) fn pack(t: &Tensor) -> Tensor {
    if !active() {
        return t.detach();
    }
    let tape = stack::top_id();
    CONTEXTS.with(|s| match s.borrow_mut().last_mut() {
        Some(Context::Capture(seg)) if seg.tape == tape => seg.pack_save(t),
        Some(Context::Refill(r)) if r.tape == tape => r.check_save(t),
        _ => t.detach(),
    })
}

/// What the dispatch point does with an op's computation.
pub(crate) enum Replay {
    /// Compute it.
    Compute,
    /// Use the output a selective policy kept from the forward.
    Kept(Tensor),
    /// A product after the rerun stopped: zeros of its shape will do.
    Skip,
}

/// For an op about to compute, in a rerun: the kept output of a selective policy, or a skip
/// for a product once the rerun has everything backward needs. Only an op the tape records
/// (`needed`) can be the next slot: a product of frozen inputs (a LoRA's base on a frozen
/// embedding) computes, never taking the kept output of the recorded product after it.
pub(crate) fn replay(op: &'static OpSpec, needed: bool, shape: &[usize]) -> Replay {
    if !active() {
        return Replay::Compute;
    }
    let tape = stack::top_id();
    CONTEXTS.with(|s| match s.borrow().last() {
        Some(Context::Refill(r)) if r.tape == tape => {
            if r.stopped {
                return if op.dot {
                    Replay::Skip
                } else {
                    Replay::Compute
                };
            }
            let st = r.seg.st.borrow();
            match st.slots.get(r.next_slot) {
                Some(slot)
                    if needed
                        && slot.state == SlotState::Kept
                        && slot.op.name == op.name
                        && slot.shape[..] == *shape =>
                {
                    match slot.target.upgrade() {
                        Some(s) => Replay::Kept(Tensor::from_parts(s, slot.shape.clone(), false)),
                        None => Replay::Compute,
                    }
                }
                _ => Replay::Compute,
            }
        }
        _ => Replay::Compute,
    })
}

/// True inside a rerun that already has everything (a `backward()` there does nothing).
pub(crate) fn stopped() -> bool {
    active()
        && CONTEXTS.with(|s| matches!(s.borrow().last(), Some(Context::Refill(r)) if r.stopped))
}

/// A backward starts: segments whose forward is under way stop their reruns by PyTorch's count.
pub(crate) fn note_backward() {
    if active() {
        CONTEXTS.with(|s| {
            for c in s.borrow().iter() {
                if let Context::Capture(seg) = c {
                    seg.st.borrow_mut().backward_inside = true;
                }
            }
        });
    }
}

/// Names `t`'s storage for the innermost capture's policy.
pub(crate) fn name(t: &Tensor, name: &str) {
    if !active() {
        return;
    }
    CONTEXTS.with(|s| {
        if let Some(Context::Capture(seg)) = s.borrow().last() {
            let mut st = seg.st.borrow_mut();
            let ptr = Rc::as_ptr(t.storage());
            if let Some(slot) = st.slots.iter_mut().rev().find(|s| s.origin.as_ptr() == ptr) {
                slot.name = Some(name.to_string());
            }
        }
    });
}

/// Marks the start of a backward: segments refilled after it are emptied by [`release_since`].
pub(crate) fn refilled_mark() -> usize {
    REFILLED.with(|r| r.borrow().len())
}

/// Empties again what the segments refilled since `mark` brought back.
pub(crate) fn release_since(mark: usize) {
    let segs: Vec<Weak<Recording>> = REFILLED.with(|r| {
        let mut r = r.borrow_mut();
        let at = mark.min(r.len());
        r.split_off(at)
    });
    for s in segs.iter().filter_map(Weak::upgrade) {
        s.release();
    }
}
