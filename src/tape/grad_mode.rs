//! Grad mode: whether ops record (PyTorch's `torch.no_grad()` / `torch.enable_grad()`).

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record (PyTorch's `torch.is_grad_enabled()`).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// RAII scope in which ops record nothing (PyTorch's `torch.no_grad()`).
#[must_use = "grad mode is restored when the guard drops"]
pub struct NoGradGuard {
    prev: bool,
}

impl NoGradGuard {
    /// Turns recording off until the guard drops.
    pub fn new() -> Self {
        NoGradGuard {
            prev: GRAD_ENABLED.with(|g| g.replace(false)),
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// RAII scope in which ops record again (PyTorch's `torch.enable_grad()`).
#[must_use = "grad mode is restored when the guard drops"]
pub struct EnableGradGuard {
    prev: bool,
}

impl EnableGradGuard {
    /// Turns recording on until the guard drops.
    pub fn new() -> Self {
        EnableGradGuard {
            prev: GRAD_ENABLED.with(|g| g.replace(true)),
        }
    }
}

impl Default for EnableGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EnableGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Runs `f` with recording off.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = NoGradGuard::new();
    f()
}
