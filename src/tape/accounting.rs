//! Byte accounting: how many bytes of activations the thread's tapes keep for backward now,
//! and the peak since it was last reset. Each storage counts once, however many entries save it.

use std::cell::Cell;

thread_local! {
    static SAVED_NOW: Cell<usize> = const { Cell::new(0) };
    static SAVED_PEAK: Cell<usize> = const { Cell::new(0) };
}

pub(crate) fn memory_add(bytes: usize) {
    if bytes > 0 {
        let now = SAVED_NOW.with(|c| {
            let v = c.get() + bytes;
            c.set(v);
            v
        });
        SAVED_PEAK.with(|p| p.set(p.get().max(now)));
    }
}

pub(crate) fn memory_sub(bytes: usize) {
    if bytes > 0 {
        SAVED_NOW.with(|c| c.set(c.get().saturating_sub(bytes)));
    }
}

/// Bytes of activations the thread's tapes currently keep for backward (each storage once).
/// Tensors the caller created (parameters, input batches) are the caller's and not counted.
pub fn saved_bytes() -> usize {
    SAVED_NOW.with(|c| c.get())
}

/// The highest [`saved_bytes`] since the last [`reset_peak_saved_bytes`].
pub fn peak_saved_bytes() -> usize {
    SAVED_PEAK.with(|c| c.get())
}

/// Starts a new peak measurement from the current saved bytes.
pub fn reset_peak_saved_bytes() {
    SAVED_PEAK.with(|p| p.set(saved_bytes()));
}

/// Counts a tensor that backward now holds (its storage's first holder adds its bytes).
pub(crate) fn retain(t: &crate::tensor::Tensor) {
    if t.storage().is_activation() {
        memory_add(t.storage().retain_saved());
    }
}

/// Stops counting a tensor that backward held (its storage's last holder removes its bytes).
pub(crate) fn release(t: &crate::tensor::Tensor) {
    if t.storage().is_activation() {
        memory_sub(t.storage().release_saved());
    }
}
