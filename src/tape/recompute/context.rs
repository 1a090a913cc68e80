//! The thread's recomputation contexts, innermost last: a segment's forward being captured,
//! a rerun refilling a segment, or a reentrant segment's probe. Each is pushed by a guard that
//! pops it on every exit of the body (a return, an error or an unwind).

use super::segment::{Recording, SlotState};
use crate::dtype::DType;
use crate::error::Error;
use crate::ops::spec::OpSpec;
use crate::shape::Shape;
use crate::tape::accounting::memory_add;
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

/// A saved tensor's shape and dtype (PyTorch's checkpoint metadata, on one device).
pub(super) type Meta = (Shape, DType);

pub(super) struct Refilling {
    pub(super) seg: Rc<Recording>,
    pub(super) tape: u32,
    pub(super) next_slot: usize,
    pub(super) next_save: usize,
    /// Stop after this many saves (PyTorch's count), or when nothing is missing (`usize::MAX`).
    pub(super) limit: usize,
    pub(super) stopped: bool,
    pub(super) error: Option<Error>,
    /// Saves whose shape or dtype differ from the forward's: (position, forward, rerun).
    pub(super) mismatched: Vec<(usize, Meta, Meta)>,
}

pub(super) fn meta_text(m: &Meta) -> String {
    let dims: Vec<String> = m.0.iter().map(|d| d.to_string()).collect();
    let dtype = match m.1 {
        DType::F16 => "torch.float16",
        DType::BF16 => "torch.bfloat16",
        DType::F32 => "torch.float32",
        DType::F64 => "torch.float64",
    };
    format!(
        "{{'shape': torch.Size([{}]), 'dtype': {dtype}, 'device': device(type='cpu')}}",
        dims.join(", ")
    )
}

impl Refilling {
    /// The rerun recorded its next op: move its output into the slot's empty storage.
    /// A slot of the same shape recorded by another op is refused (PyTorch would feed its
    /// output to the forward op's backward; a body must run the same ops on every call).
    pub(super) fn fill(&mut self, op: &'static OpSpec, output: &mut Tensor) {
        let k = self.next_slot;
        self.next_slot += 1;
        if self.stopped {
            return;
        }
        let mut st = self.seg.st.borrow_mut();
        let Some(slot) = st.slots.get_mut(k) else {
            return;
        };
        if slot.state != SlotState::Missing || slot.shape.as_slice() != output.shape() {
            return;
        }
        if slot.op.name != op.name {
            self.error.get_or_insert_with(|| {
                Error::Checkpoint(format!(
                    "recomputed op {k} is {} {:?}, but the forward's was {} {:?}: the body must run the same ops on every call",
                    op.name,
                    output.shape(),
                    slot.op.name,
                    slot.shape
                ))
            });
            return;
        }
        let Some(target) = slot.target.upgrade() else {
            return;
        };
        if target.borrow().dtype() != output.dtype() {
            return;
        }
        slot.state = SlotState::Filled;
        let bytes = target.fill_from(output.storage());
        if target.saved_refs() > 0 {
            memory_add(bytes);
        }
        *output = Tensor::from_parts(target, output.shape().into(), false);
        st.missing -= 1;
        if st.missing == 0 && self.limit == usize::MAX {
            self.stopped = true;
        }
    }

    /// The rerun saved its next tensor: compare it with the forward's and refill the packed
    /// tensor that is no op's output (its elements move when nothing else sees `t`'s storage,
    /// and the rerun then saves the refilled storage). Returns the handle the rerun saves.
    pub(super) fn check_save(&mut self, t: &Tensor) -> Tensor {
        let k = self.next_save;
        self.next_save += 1;
        if self.stopped {
            return t.detach();
        }
        let mut saved = None;
        let mut st = self.seg.st.borrow_mut();
        match st.saves.get(k) {
            None => {
                self.error.get_or_insert_with(|| {
                    Error::Checkpoint(
                        "torch.utils.checkpoint: trying to save more tensors during recomputation than during the original forward pass.".into(),
                    )
                });
            }
            Some(s) if s.shape.as_slice() != t.shape() || s.dtype != t.dtype() => {
                let m = ((s.shape.clone(), s.dtype), (t.shape().into(), t.dtype()));
                self.mismatched.push((k, m.0, m.1));
            }
            Some(s) => {
                if let Some(p) = s.copy.upgrade()
                    && p.is_pending()
                {
                    // Made by this op (statistics, a mask) and seen by no view: movable.
                    let private = t.storage().born() > OP_START.with(|c| c.get())
                        && Rc::strong_count(t.storage()) == 1;
                    let bytes = if private {
                        p.fill_from(t.storage())
                    } else {
                        p.fill_copy(&t.data())
                    };
                    if p.saved_refs() > 0 {
                        memory_add(bytes);
                    }
                    st.missing -= 1;
                    saved = Some(Tensor::from_parts(p, t.shape().into(), false));
                }
            }
        }
        if self.next_save == self.limit || self.limit == usize::MAX && st.missing == 0 {
            self.stopped = true;
        }
        saved.unwrap_or_else(|| t.detach())
    }
}

pub(super) enum Context {
    Capture(Rc<Recording>),
    Refill(Refilling),
    /// A reentrant segment's forward: the trainable leaves its ops touch.
    Probe(Vec<Tensor>),
}

thread_local! {
    pub(super) static CONTEXTS: RefCell<Vec<Context>> = const { RefCell::new(Vec::new()) };
    /// Whether any context is set (checked on every recorded op, so a plain flag).
    pub(super) static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// Segments refilled since each running backward began, emptied again when it ends (weak:
    /// a segment whose entries are all freed is gone, with what it held).
    pub(super) static REFILLED: RefCell<Vec<Weak<Recording>>> = const { RefCell::new(Vec::new()) };
    /// The birth number when the op being dispatched began (set while a context is active).
    pub(super) static OP_START: Cell<u64> = const { Cell::new(0) };
}

pub(super) fn push(c: Context) {
    CONTEXTS.with(|s| s.borrow_mut().push(c));
    ACTIVE.with(|a| a.set(true));
}

/// Pops the context `is_it` recognises (the top one, unless a panic left others above it).
pub(super) fn pop(is_it: impl Fn(&Context) -> bool) -> Option<Context> {
    CONTEXTS.with(|s| {
        let mut s = s.borrow_mut();
        let at = s.iter().rposition(is_it)?;
        s.truncate(at + 1);
        let c = s.pop();
        ACTIVE.with(|a| a.set(!s.is_empty()));
        c
    })
}

/// A capture in progress; ended on every exit of the body.
pub(crate) struct CaptureGuard {
    seg: Option<Rc<Recording>>,
}

impl CaptureGuard {
    /// Pushes the capture of `seg`'s forward.
    pub(super) fn push(seg: Rc<Recording>) -> CaptureGuard {
        push(Context::Capture(seg.clone()));
        CaptureGuard { seg: Some(seg) }
    }

    /// Ends the capture and returns what it saw.
    pub fn finish(mut self) -> Rc<Recording> {
        let seg = self
            .seg
            .take()
            .unwrap_or_else(|| unreachable!("finish consumes the guard"));
        pop(|c| matches!(c, Context::Capture(s) if Rc::ptr_eq(s, &seg)));
        seg
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if let Some(seg) = self.seg.take() {
            pop(|c| matches!(c, Context::Capture(s) if Rc::ptr_eq(s, &seg)));
        }
    }
}

/// A rerun in progress; its context is popped on every exit of the body.
pub(super) struct RefillGuard {
    seg: Option<Rc<Recording>>,
}

impl RefillGuard {
    pub(super) fn push(r: Refilling) -> RefillGuard {
        let seg = r.seg.clone();
        push(Context::Refill(r));
        RefillGuard { seg: Some(seg) }
    }

    fn take(&mut self) -> Option<Refilling> {
        let seg = self.seg.take()?;
        match pop(|c| matches!(c, Context::Refill(r) if Rc::ptr_eq(&r.seg, &seg))) {
            Some(Context::Refill(r)) => Some(r),
            _ => None,
        }
    }

    /// Ends the rerun: what it saw.
    pub(super) fn finish(mut self) -> Option<Refilling> {
        self.take()
    }
}

impl Drop for RefillGuard {
    fn drop(&mut self) {
        self.take();
    }
}

/// A reentrant segment's forward in progress; ended on every exit of the body.
pub(crate) struct ProbeGuard {
    done: bool,
}

impl ProbeGuard {
    /// Pushes a probe.
    pub(super) fn push() -> ProbeGuard {
        push(Context::Probe(Vec::new()));
        ProbeGuard { done: false }
    }

    /// Ends the probe: the trainable leaves the body's ops used.
    pub fn finish(mut self) -> Vec<Tensor> {
        self.done = true;
        match pop(|c| matches!(c, Context::Probe(_))) {
            Some(Context::Probe(t)) => t,
            _ => Vec::new(),
        }
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.done {
            pop(|c| matches!(c, Context::Probe(_)));
        }
    }
}
