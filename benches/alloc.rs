//! The allocator every bench (and the `rewind` binary) uses: mimalloc v2, with freed memory
//! kept instead of returned to the OS, so large activation buffers are reused without page
//! faults while small tape allocations stay fast.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc v2's `mi_option_purge_delay`.
const PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps freed memory in the process (mimalloc `purge_delay = -1`).
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set is mimalloc's documented, thread-safe option setter; the option
    // only changes when freed memory is returned to the OS.
    unsafe { mi_option_set(PURGE_DELAY, -1) }
}
