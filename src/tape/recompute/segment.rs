//! What a checkpoint segment's forward recorded: the op outputs of its body in recording
//! order (slots), the tensors its ops saved in saving order, and the placeholders or evicted
//! outputs still waiting for a rerun.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::spec::OpSpec;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tape::accounting::memory_sub;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Instant;

/// A segment's body, run again by backward (the checkpoint layer restores the generator and
/// autocast state and feeds it the saved inputs).
pub(crate) trait Rerun {
    /// Runs the body once more, dropping what it returns.
    fn rerun(&self) -> Result<()>;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SlotState {
    /// Nothing to bring back.
    Other,
    /// Kept by a selective policy: a rerun reuses it when the same op asks ([`replay`]).
    Kept,
    /// Empty, waiting for the rerun.
    Missing,
    /// Refilled by the current backward.
    Filled,
}

/// One op output recorded inside a body, in recording order.
pub(super) struct Slot {
    pub(super) op: &'static OpSpec,
    pub(super) shape: Shape,
    /// The forward's storage.
    pub(super) origin: Weak<Storage>,
    /// The op made a new storage (not a view sharing an input's).
    pub(super) fresh: bool,
    /// When it was recorded (its op's time is the gap to the previous slot's).
    pub(super) at: Instant,
    /// The name [`name`] gave it.
    pub(super) name: Option<String>,
    /// What backward reads: the placeholder (packed) or the forward's storage (evicted, kept).
    pub(super) target: Weak<Storage>,
    pub(super) state: SlotState,
}

/// One tensor the body's ops saved, in saving order.
pub(super) struct Save {
    pub(super) shape: Shape,
    pub(super) dtype: DType,
    /// The placeholder of a packed tensor that is no op's output, filled by copy.
    pub(super) copy: Weak<Storage>,
}

pub(super) struct State {
    pub(super) slots: Vec<Slot>,
    /// Fresh output storage → its slot, for packing (pack mode, during the forward).
    pub(super) by_storage: HashMap<usize, usize>,
    pub(super) saves: Vec<Save>,
    /// Placeholders and evicted outputs still empty.
    pub(super) missing: usize,
    /// The forward called `backward()` inside the body: reruns stop by PyTorch's count.
    pub(super) backward_inside: bool,
}

/// What one checkpoint segment (or one profiled block) recorded, and how to bring it back.
pub(crate) struct Recording {
    pub(super) me: Weak<Recording>,
    pub(super) name: String,
    /// Pack saved tensors as they are saved (plain segments), or record plainly (selective
    /// segments, profiles).
    pub(super) pack: bool,
    /// The tape the forward recorded on.
    pub(super) tape: u32,
    /// Storages born after this were made inside the body.
    pub(super) born: u64,
    pub(super) began: Instant,
    pub(super) body: Option<Box<dyn Rerun>>,
    /// The segment whose body this one runs in (its placeholders may hold this one's inputs).
    pub(super) enclosing: Option<Rc<Recording>>,
    pub(super) st: RefCell<State>,
}

impl Recording {
    /// A segment whose forward starts now on tape `tape`, inside `enclosing` if any.
    pub(super) fn new(
        name: &str,
        pack: bool,
        tape: u32,
        body: Option<Box<dyn Rerun>>,
        enclosing: Option<Rc<Recording>>,
    ) -> Rc<Recording> {
        Rc::new_cyclic(|me| Recording {
            me: me.clone(),
            name: name.to_string(),
            pack,
            tape,
            born: crate::storage::next_birth(),
            began: Instant::now(),
            body,
            enclosing,
            st: RefCell::new(State {
                slots: Vec::new(),
                by_storage: HashMap::new(),
                saves: Vec::new(),
                missing: 0,
                backward_inside: false,
            }),
        })
    }
}

/// What a policy or a planner sees of one recorded op output.
#[derive(Debug, Clone)]
pub(crate) struct SlotInfo {
    pub op: &'static OpSpec,
    pub shape: Shape,
    pub name: Option<String>,
    /// Seconds since the previous slot (the op's time, and any unrecorded work before it).
    pub secs: f64,
    /// Bytes backward holds of it (0 when no entry saved it).
    pub saved_bytes: usize,
    /// Its bytes when a policy may drop it: the first op to make the storage (not a view),
    /// saved by backward, seen by nothing outside the tape, and not protected.
    pub droppable: Option<usize>,
}

impl Recording {
    /// The forward recorded an op inside the body.
    pub(super) fn list(&self, op: &'static OpSpec, inputs: &[&Tensor], output: &Tensor) {
        let mut st = self.st.borrow_mut();
        let fresh = !inputs
            .iter()
            .any(|t| Rc::ptr_eq(t.storage(), output.storage()));
        let k = st.slots.len();
        st.slots.push(Slot {
            op,
            shape: output.shape().into(),
            origin: Rc::downgrade(output.storage()),
            fresh,
            at: Instant::now(),
            name: None,
            target: Weak::new(),
            state: SlotState::Other,
        });
        if self.pack && fresh {
            st.by_storage
                .insert(Rc::as_ptr(output.storage()) as usize, k);
        }
    }

    /// An op inside the body saves `t`: packed when the body made it.
    pub(super) fn pack_save(&self, t: &Tensor) -> Tensor {
        let mut st = self.st.borrow_mut();
        let s = t.storage();
        let made_inside = self.pack && s.is_activation() && s.born() > self.born && !s.is_pending();
        let mut copy = Weak::new();
        let packed = made_inside.then(|| {
            let slot = st
                .by_storage
                .get(&(Rc::as_ptr(s) as usize))
                .copied()
                .filter(|&j| st.slots[j].origin.as_ptr() == Rc::as_ptr(s));
            let placeholder = match slot {
                Some(j) => match st.slots[j].target.upgrade() {
                    Some(p) => p,
                    None => {
                        let p = Rc::new(Storage::placeholder(t.dtype()));
                        st.slots[j].target = Rc::downgrade(&p);
                        st.slots[j].state = SlotState::Missing;
                        st.missing += 1;
                        p
                    }
                },
                None => {
                    let p = Rc::new(Storage::placeholder(t.dtype()));
                    copy = Rc::downgrade(&p);
                    st.missing += 1;
                    p
                }
            };
            Tensor::from_parts(placeholder, t.shape().into(), false)
        });
        st.saves.push(Save {
            shape: t.shape().into(),
            dtype: t.dtype(),
            copy,
        });
        packed.unwrap_or_else(|| t.detach())
    }

    /// What the forward recorded, for a policy or a planner; `protect` (the segment's inputs
    /// and output) is never droppable.
    pub fn slots(&self, protect: &[&Tensor]) -> Vec<SlotInfo> {
        let st = self.st.borrow();
        let mut seen: Vec<*const Storage> = Vec::new();
        let mut prev = self.began;
        st.slots
            .iter()
            .map(|slot| {
                let secs = slot.at.duration_since(prev).as_secs_f64();
                prev = slot.at;
                let storage = slot.origin.upgrade();
                let saved_bytes = storage
                    .as_ref()
                    .filter(|s| s.saved_refs() > 0)
                    .map_or(0, |s| s.borrow().bytes());
                let droppable = storage.and_then(|s| {
                    let ptr = Rc::as_ptr(&s);
                    let first = !seen.contains(&ptr);
                    seen.push(ptr);
                    // Only the handles the tape saved may point at it (this one aside).
                    let private = Rc::strong_count(&s) <= s.saved_refs() as usize + 1;
                    let protected = protect.iter().any(|t| Rc::ptr_eq(t.storage(), &s));
                    (first
                        && slot.fresh
                        && s.saved_refs() > 0
                        && private
                        && !protected
                        && s.is_activation())
                    .then(|| s.borrow().bytes())
                });
                SlotInfo {
                    op: slot.op,
                    shape: slot.shape.clone(),
                    name: slot.name.clone(),
                    secs,
                    saved_bytes,
                    droppable,
                }
            })
            .collect()
    }

    /// Evicts the droppable outputs that `keep` does not keep (a selective policy's choice,
    /// made when the body returned) and marks the kept ones for replay. Returns the bytes
    /// evicted.
    pub fn evict(&self, keep: &[bool], protect: &[&Tensor]) -> usize {
        let info = self.slots(protect);
        let mut st = self.st.borrow_mut();
        let mut evicted = 0;
        for ((slot, info), &keep) in st.slots.iter_mut().zip(&info).zip(keep) {
            let (Some(_), Some(s)) = (info.droppable, slot.origin.upgrade()) else {
                continue;
            };
            slot.target = Rc::downgrade(&s);
            if keep {
                slot.state = SlotState::Kept;
            } else {
                let bytes = s.evict();
                memory_sub(bytes);
                evicted += bytes;
                slot.state = SlotState::Missing;
            }
        }
        st.missing += st
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Missing)
            .count();
        evicted
    }

    /// Forgets placeholders nothing holds any more; returns how many are still empty.
    pub(super) fn recount(&self) -> usize {
        let mut st = self.st.borrow_mut();
        let mut missing = 0;
        for slot in st.slots.iter_mut() {
            if slot.state == SlotState::Missing {
                match slot.target.upgrade() {
                    Some(t) if t.is_pending() => missing += 1,
                    _ => slot.state = SlotState::Other,
                }
            }
        }
        missing += st
            .saves
            .iter()
            .filter(|s| s.copy.upgrade().is_some_and(|p| p.is_pending()))
            .count();
        st.missing = missing;
        missing
    }

    /// Empties again what a rerun brought back (the backward that needed it has ended).
    pub(super) fn release(&self) {
        let st = &mut *self.st.borrow_mut();
        let empty = |s: &Storage| {
            let bytes = s.evict();
            if s.saved_refs() > 0 {
                memory_sub(bytes);
            }
        };
        for slot in st.slots.iter_mut().filter(|s| s.state == SlotState::Filled) {
            match slot.target.upgrade() {
                Some(t) => {
                    empty(&t);
                    slot.state = SlotState::Missing;
                }
                None => slot.state = SlotState::Other,
            }
        }
        for save in &st.saves {
            if let Some(p) = save.copy.upgrade()
                && !p.is_pending()
            {
                empty(&p);
            }
        }
    }

    /// PyTorch's error (its text up to the debugging tip, which names PyTorch-only switches).
    pub(super) fn count_error(&self, forward: usize, rerun: usize) -> Error {
        Error::Checkpoint(format!(
            "torch.utils.checkpoint: A different number of tensors was saved during the original forward and recomputation.\nNumber of tensors saved during forward: {forward}\nNumber of tensors saved during recomputation: {rerun}."
        ))
    }
}
