//! Forward hooks: functions run on a module's output after each forward (PyTorch's
//! `register_forward_hook`), e.g. HF's `enable_input_require_grads` on the input embeddings.

use crate::error::Result;
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};

type Hook = Box<dyn Fn(&Tensor) -> Result<()>>;

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
        self.hooks.borrow_mut().push((id, Box::new(hook)));
        HookHandle(id)
    }

    /// Removes a hook; false if it was already gone.
    pub fn remove(&self, handle: HookHandle) -> bool {
        let mut hooks = self.hooks.borrow_mut();
        let before = hooks.len();
        hooks.retain(|(id, _)| *id != handle.0);
        hooks.len() != before
    }

    /// Runs every hook on `output`.
    pub fn run(&self, output: &Tensor) -> Result<()> {
        self.hooks.borrow().iter().try_for_each(|(_, h)| h(output))
    }
}

impl std::fmt::Debug for ForwardHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ForwardHooks({})", self.hooks.borrow().len())
    }
}
