//! The thread's stack of tapes (the root tape, child tapes pushed on top) and what happens
//! when a tensor handle dies: the entry that made it loses a reference.

use super::graph::Tape;
use crate::error::{Error, Result};
use crate::tensor::{NodeId, TensorImpl};
use std::cell::{Cell, RefCell};

struct Stack {
    tapes: Vec<Tape>,
    next_id: u32,
}

thread_local! {
    static STACK: RefCell<Stack> = RefCell::new(Stack { tapes: vec![Tape::new(0)], next_id: 1 });
    /// Outputs dropped while the stack was borrowed, released once it is free again.
    static DROPPED: RefCell<Vec<NodeId>> = const { RefCell::new(Vec::new()) };
    /// Whether `DROPPED` holds anything (checked on every op, so a plain flag).
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// The last handle to an op's output is gone: its entry loses the reference the handle held,
/// at once when the stack is free, else when its holder lets go of it.
impl Drop for TensorImpl {
    fn drop(&mut self) {
        let Some(id) = self.node.get() else { return };
        let _ = STACK.try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                s.unref_output(id);
                drop(s);
                release_dropped();
            }
            Err(_) => {
                let _ = DROPPED.try_with(|d| d.borrow_mut().push(id));
                PENDING.with(|p| p.set(true));
            }
        });
    }
}

impl Stack {
    /// Drops the reference `id`'s output handle held (nothing when its tape or generation is
    /// gone).
    fn unref_output(&mut self, id: NodeId) {
        if let Some(tape) = self.tapes.iter_mut().rev().find(|t| t.id == id.tape)
            && tape.generation == id.generation
        {
            tape.unref_output(id.index as usize);
        }
    }
}

/// Releases the outputs dropped while the stack was borrowed (a no-op unless there are any).
#[inline]
pub(crate) fn release_dropped() {
    if PENDING.with(|p| p.get()) {
        release_pending();
    }
}

#[cold]
fn release_pending() {
    let _ = STACK.try_with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        PENDING.with(|p| p.set(false));
        // Freeing may drop more outputs; they join the list and this loop takes them too.
        while let Some(id) = DROPPED.try_with(|d| d.borrow_mut().pop()).ok().flatten() {
            s.unref_output(id);
        }
    });
}

/// Runs `f` on the tape with id `id`; a tape no longer on the stack means its graph is gone.
pub(crate) fn with_tape<R>(id: u32, f: impl FnOnce(&mut Tape) -> R) -> Result<R> {
    let r = STACK.with(|s| {
        let mut s = s.borrow_mut();
        let tape = s
            .tapes
            .iter_mut()
            .rev()
            .find(|t| t.id == id)
            .ok_or(Error::GraphFreed)?;
        Ok(f(tape))
    });
    release_dropped();
    r
}

/// Runs `f` on the tape ops record on now (the top of the stack).
pub(crate) fn with_top<R>(f: impl FnOnce(&mut Tape) -> R) -> R {
    let r = STACK.with(|s| {
        f(s.borrow_mut()
            .tapes
            .last_mut()
            .expect("the root tape stays"))
    });
    release_dropped();
    r
}

/// The id of the tape ops record on now.
pub(crate) fn top_id() -> u32 {
    STACK.with(|s| s.borrow().tapes.last().map_or(0, |t| t.id))
}

/// Pushes a fresh tape; returns its id.
pub(crate) fn push() -> u32 {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.tapes.push(Tape::new(id));
        id
    })
}

/// Takes tape `id` off the stack when it is on top (never the root tape).
pub(crate) fn pop(id: u32) -> Option<Tape> {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        match s.tapes.last() {
            Some(t) if t.id == id && s.tapes.len() > 1 => s.tapes.pop(),
            _ => None,
        }
    })
}
