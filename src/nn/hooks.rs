//! Forward hooks: functions run on a module's output after each forward (PyTorch's
//! `register_forward_hook`), e.g. HF's `enable_input_require_grads` on the input embeddings.
//! A call runs the hooks registered when it began, as PyTorch does: a hook may register or
//! remove hooks (its own included) while it runs; a hook added during a call first runs on the
//! next call, and one removed during a call still runs in it if it had not yet.

use crate::error::Result;
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

type Hook = Rc<dyn Fn(&Tensor) -> Result<()>>;

/// The hooks registered on one module, run in registration order.
#[derive(Default)]
pub struct ForwardHooks {
    hooks: RefCell<Vec<(u64, Hook)>>,
    next: Cell<u64>,
}

/// Identifies a registered hook, for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookHandle(u64);

impl ForwardHooks {
    /// Registers `hook` to run on every forward output.
    pub fn register(&self, hook: impl Fn(&Tensor) -> Result<()> + 'static) -> HookHandle {
        let id = self.next.get();
        self.next.set(id + 1);
        self.hooks.borrow_mut().push((id, Rc::new(hook)));
        HookHandle(id)
    }

    /// Removes a hook; false if it was already gone.
    pub fn remove(&self, handle: HookHandle) -> bool {
        let mut hooks = self.hooks.borrow_mut();
        let before = hooks.len();
        hooks.retain(|(id, _)| *id != handle.0);
        hooks.len() != before
    }

    /// Runs every hook registered now on `output`, in registration order.
    pub fn run(&self, output: &Tensor) -> Result<()> {
        let snapshot: Vec<Hook> = self.hooks.borrow().iter().map(|(_, h)| h.clone()).collect();
        snapshot.iter().try_for_each(|h| h(output))
    }
}

impl std::fmt::Debug for ForwardHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ForwardHooks({})", self.hooks.borrow().len())
    }
}
