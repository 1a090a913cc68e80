//! Child tapes: a tape pushed on top of the stack for a recomputation or a scratch scope, so
//! that what is recorded there is freed when it is popped, on every exit.

use super::stack;

/// A child tape on top of the stack; popped, and everything on it freed, when the guard drops
/// (a return, an error or an unwind alike).
pub(crate) struct ChildTape {
    id: u32,
}

impl ChildTape {
    /// Pushes a fresh child tape; ops record there until the guard drops.
    pub fn push() -> ChildTape {
        ChildTape { id: stack::push() }
    }
}

impl Drop for ChildTape {
    fn drop(&mut self) {
        if let Some(mut tape) = stack::pop(self.id) {
            tape.free_all();
            drop(tape);
            stack::release_dropped();
        }
    }
}

/// Runs `f` on a fresh child tape and frees everything recorded there when `f` returns (or
/// panics): a scope for a forward that is measured but never backwarded, such as the planner's
/// probe of a model's blocks. Values `f` returns stay valid; backward through them fails with
/// [`crate::Error::GraphFreed`].
pub fn scratch<R>(f: impl FnOnce() -> R) -> R {
    let _child = ChildTape::push();
    f()
}
