//! The mechanism under selective checkpointing. While a selective segment's body runs, the
//! tape lists every op output it records (capture). Afterwards the segment keeps the saved
//! outputs its policy chose and evicts the others (their buffers are freed; the handles that
//! backward holds stay). In backward, before the first of the segment's entries runs, a rerun
//! of the body refills the evicted buffers in recording order: the n-th recorded op of the
//! rerun is the n-th of the forward, so its fresh output moves into the evicted storage. Kept
//! matmul outputs are handed back instead of recomputed ([`replay_kept`]), and the rerun stops
//! at the first matmul after nothing is missing. Values are those of the forward, bit for bit:
//! the same ops on the same inputs with the same generator state.

use super::{STACK, memory_add, memory_sub};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::{Buffer, Storage};
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

/// One op output recorded inside a body, in recording order.
pub(crate) struct Slot {
    /// The op.
    pub op: &'static str,
    /// Its output's shape.
    pub shape: Shape,
    /// Its output's storage.
    pub storage: Rc<Storage>,
    /// The op made a new storage (not a view sharing an input's).
    pub fresh: bool,
    /// When it was recorded (its op's time is the gap to the previous slot's).
    pub at: std::time::Instant,
}

/// What a capture saw: the outputs recorded on the segment's tape while its body ran, names
/// given to tensors with `checkpoint_name`, and where on the tape its entries lie.
pub(crate) struct Capture {
    pub slots: Vec<Slot>,
    pub names: Vec<(Rc<Storage>, String)>,
    /// When the capture began.
    pub began: std::time::Instant,
    tape: u32,
    generation: u32,
    first_entry: usize,
}

impl Capture {
    /// For every slot, its bytes when a policy may drop it: the first op to make the storage
    /// (not a view), which backward holds, which nothing outside the tape can see, and which
    /// is neither a segment input nor its output (`protect`); `None` otherwise.
    pub fn droppable(&self, protect: &[&Tensor]) -> Vec<Option<usize>> {
        let mut seen: Vec<*const Storage> = Vec::new();
        self.slots
            .iter()
            .map(|s| {
                let ptr = Rc::as_ptr(&s.storage);
                let first = !seen.contains(&ptr);
                seen.push(ptr);
                let saved = s.storage.saved_refs() > 0;
                // Only handles the tape saved (and this capture's own) may point at it.
                let ours = self
                    .slots
                    .iter()
                    .filter(|t| Rc::ptr_eq(&t.storage, &s.storage))
                    .count()
                    + self
                        .names
                        .iter()
                        .filter(|(t, _)| Rc::ptr_eq(t, &s.storage))
                        .count();
                let private =
                    Rc::strong_count(&s.storage) <= s.storage.saved_refs() as usize + ours;
                let protected = protect.iter().any(|t| Rc::ptr_eq(t.storage(), &s.storage));
                (first && s.fresh && saved && private && !protected && s.storage.is_activation())
                    .then(|| s.storage.borrow().bytes())
            })
            .collect()
    }

    /// Seconds between slot `k`'s record and the previous one's (the capture's start for the
    /// first): the time of op `k`, and of any unrecorded work before it.
    pub fn secs(&self, k: usize) -> f64 {
        let prev = if k == 0 {
            self.began
        } else {
            self.slots[k - 1].at
        };
        self.slots[k].at.duration_since(prev).as_secs_f64()
    }

    /// The bytes backward holds of slot `k`'s storage, 0 when no entry saved it.
    pub fn saved_bytes(&self, k: usize) -> usize {
        let s = &self.slots[k].storage;
        if s.saved_refs() > 0 {
            s.borrow().bytes()
        } else {
            0
        }
    }

    /// The name given to slot `k`'s output, if any.
    pub fn name(&self, k: usize) -> Option<&str> {
        let s = &self.slots[k].storage;
        self.names
            .iter()
            .find(|(t, _)| Rc::ptr_eq(t, s))
            .map(|(_, n)| n.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SlotState {
    /// Not saved by any entry, or a view of another slot's storage: nothing to do.
    Other,
    /// Kept: a rerun reuses it when the same op asks ([`replay_kept`]).
    Kept,
    /// Evicted, waiting for the rerun to produce it.
    Missing,
    /// Evicted and refilled.
    Filled,
}

struct PlanSlot {
    op: &'static str,
    shape: Shape,
    storage: Weak<Storage>,
    bytes: usize,
    state: Cell<SlotState>,
}

/// The evicted and kept outputs of one selective segment, in recording order.
pub(crate) struct RefillPlan {
    slots: Vec<PlanSlot>,
    missing: Cell<usize>,
}

impl RefillPlan {
    /// Outputs still to be refilled.
    pub fn missing(&self) -> usize {
        self.missing.get()
    }
}

/// A selective segment's rerun, run by the backward sweep before the first of its entries.
pub(crate) trait Refill {
    /// Refills the evicted outputs (a no-op once done).
    fn refill(&self) -> Result<()>;
}

enum Context {
    Capture(Capture),
    Refilling {
        plan: Rc<RefillPlan>,
        tape: u32,
        next: usize,
        error: Option<Error>,
    },
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
    /// Whether a context is set (checked on every recorded op, so a plain flag).
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

fn current_tape() -> (u32, u32, usize) {
    STACK.with(|s| {
        let s = s.borrow();
        let t = s.tapes.last().expect("the root tape is never popped");
        (t.id, t.generation, t.entries.len())
    })
}

/// Whether a capture or a refill is under way on this thread.
pub(crate) fn active() -> bool {
    ACTIVE.with(|a| a.get())
}

/// Starts listing the outputs recorded on the current tape.
pub(crate) fn begin_capture() -> Result<()> {
    if active() {
        return Err(Error::Checkpoint(
            "a selective checkpoint segment cannot run inside another one".into(),
        ));
    }
    let (tape, generation, first_entry) = current_tape();
    CONTEXT.with(|c| {
        *c.borrow_mut() = Some(Context::Capture(Capture {
            slots: Vec::new(),
            names: Vec::new(),
            began: std::time::Instant::now(),
            tape,
            generation,
            first_entry,
        }))
    });
    ACTIVE.with(|a| a.set(true));
    Ok(())
}

/// Ends the capture begun by [`begin_capture`].
pub(crate) fn end_capture() -> Option<Capture> {
    ACTIVE.with(|a| a.set(false));
    match CONTEXT.with(|c| c.borrow_mut().take()) {
        Some(Context::Capture(cap)) => Some(cap),
        _ => None,
    }
}

/// Gives `t`'s storage a name the policy can ask for (during a capture; otherwise nothing).
pub(crate) fn name(t: &Tensor, name: &str) {
    if !active() {
        return;
    }
    CONTEXT.with(|c| {
        if let Some(Context::Capture(cap)) = &mut *c.borrow_mut() {
            cap.names.push((t.storage().clone(), name.to_string()));
        }
    });
}

/// Called by the tape for every op it records while a context is set: lists the output
/// (capture) or moves a rerun's output into the storage it refills (refill), replacing
/// `output` with a handle on that storage.
pub(crate) fn on_record(op: &'static str, inputs: &[&Tensor], output: &mut Tensor) {
    let (tape_id, _, _) = current_tape();
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_mut() {
            Some(Context::Capture(cap)) if cap.tape == tape_id => {
                let fresh = !inputs
                    .iter()
                    .any(|t| Rc::ptr_eq(t.storage(), output.storage()));
                cap.slots.push(Slot {
                    op,
                    shape: output.shape().into(),
                    storage: output.storage().clone(),
                    fresh,
                    at: std::time::Instant::now(),
                });
            }
            Some(Context::Refilling {
                plan,
                tape,
                next,
                error,
            }) if *tape == tape_id => {
                let k = *next;
                *next += 1;
                let Some(slot) = plan.slots.get(k) else {
                    error.get_or_insert_with(|| mismatch(k, None, op, output.shape()));
                    return;
                };
                if slot.op != op || slot.shape.as_slice() != output.shape() {
                    error.get_or_insert_with(|| mismatch(k, Some(slot), op, output.shape()));
                    return;
                }
                if slot.state.get() != SlotState::Missing {
                    return;
                }
                slot.state.set(SlotState::Filled);
                plan.missing.set(plan.missing.get() - 1);
                let Some(target) = slot.storage.upgrade() else {
                    return; // nothing holds it any more
                };
                if Rc::ptr_eq(&target, output.storage()) {
                    return;
                }
                std::mem::swap(
                    &mut *target.borrow_mut(),
                    &mut *output.storage().borrow_mut(),
                );
                if target.saved_refs() > 0 {
                    memory_add(slot.bytes);
                }
                *output = Tensor::from_parts(target, output.shape().into(), false);
            }
            _ => {}
        }
    });
}

fn mismatch(k: usize, slot: Option<&PlanSlot>, op: &str, shape: &[usize]) -> Error {
    Error::Checkpoint(match slot {
        Some(s) => format!(
            "selective checkpoint: recomputed op {k} is {op} {shape:?}, but the forward's was {} {:?}: the body must run the same ops on every call",
            s.op, s.shape
        ),
        None => format!(
            "selective checkpoint: the recomputation ran more ops than the forward ({op} {shape:?} is op {k}): the body must run the same ops on every call"
        ),
    })
}

/// For an op about to compute an output of `shape`: during a rerun, the forward's kept
/// output when it is the same op's (skip the computation), or [`Error::RecomputeStopped`]
/// once nothing is missing (the rest of the body is not needed). `None` otherwise.
pub(crate) fn replay_kept(op: &'static str, shape: &[usize]) -> Result<Option<Tensor>> {
    if !active() {
        return Ok(None);
    }
    let (tape_id, _, _) = current_tape();
    CONTEXT.with(|c| match &*c.borrow() {
        Some(Context::Refilling {
            plan, tape, next, ..
        }) if *tape == tape_id => {
            if plan.missing() == 0 {
                return Err(Error::RecomputeStopped);
            }
            let Some(slot) = plan.slots.get(*next) else {
                return Ok(None);
            };
            if slot.state.get() != SlotState::Kept
                || slot.op != op
                || slot.shape.as_slice() != shape
            {
                return Ok(None);
            }
            Ok(slot
                .storage
                .upgrade()
                .map(|s| Tensor::from_parts(s, shape.into(), false)))
        }
        _ => Ok(None),
    })
}

/// Evicts the saved outputs of `cap` that `keep` does not keep (never those of `protect`:
/// the segment's inputs and output), and hands every entry the body recorded the rerun that
/// `make_refill` builds from the plan. Returns the bytes evicted.
pub(crate) fn evict(
    cap: Capture,
    keep: &[bool],
    protect: &[&Tensor],
    make_refill: impl FnOnce(Rc<RefillPlan>) -> Rc<dyn Refill>,
) -> usize {
    let droppable = cap.droppable(protect);
    let (mut evicted, mut missing) = (0, 0);
    let slots: Vec<PlanSlot> = cap
        .slots
        .iter()
        .zip(keep)
        .zip(&droppable)
        .map(|((s, &keep), drop)| {
            let bytes = s.storage.borrow().bytes();
            let state = match drop {
                None => SlotState::Other,
                Some(_) if keep => SlotState::Kept,
                Some(_) => {
                    let empty = match &*s.storage.borrow() {
                        Buffer::F16(_) => Buffer::F16(Vec::new()),
                        Buffer::F32(_) => Buffer::F32(Vec::new()),
                        Buffer::F64(_) => Buffer::F64(Vec::new()),
                    };
                    *s.storage.borrow_mut() = empty;
                    memory_sub(bytes);
                    evicted += bytes;
                    missing += 1;
                    SlotState::Missing
                }
            };
            PlanSlot {
                op: s.op,
                shape: s.shape.clone(),
                storage: Rc::downgrade(&s.storage),
                bytes,
                state: Cell::new(state),
            }
        })
        .collect();
    let plan = Rc::new(RefillPlan {
        slots,
        missing: Cell::new(missing),
    });
    if missing == 0 {
        return 0;
    }
    let refill = make_refill(plan);
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(t) = s
            .tapes
            .iter_mut()
            .find(|t| t.id == cap.tape && t.generation == cap.generation)
        {
            for e in t.entries[cap.first_entry..].iter_mut().filter(|e| !e.freed) {
                e.refill = Some(refill.clone());
            }
        }
    });
    evicted
}

/// Sets the rerun context for `plan` on tape `tape` (a child tape pushed for the rerun).
pub(crate) fn begin_refill(plan: Rc<RefillPlan>, tape: u32) {
    CONTEXT.with(|c| {
        *c.borrow_mut() = Some(Context::Refilling {
            plan,
            tape,
            next: 0,
            error: None,
        })
    });
    ACTIVE.with(|a| a.set(true));
}

/// Ends the rerun: an error if an op differed from the forward's or an output is still missing.
pub(crate) fn end_refill() -> Result<()> {
    ACTIVE.with(|a| a.set(false));
    match CONTEXT.with(|c| c.borrow_mut().take()) {
        Some(Context::Refilling { error: Some(e), .. }) => Err(e),
        Some(Context::Refilling { plan, .. }) if plan.missing() > 0 => {
            Err(Error::Checkpoint(format!(
                "selective checkpoint: the recomputation left {} saved outputs missing: the body must run the same ops on every call",
                plan.missing()
            )))
        }
        _ => Ok(()),
    }
}
