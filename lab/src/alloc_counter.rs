//! A counting global allocator: wraps another allocator and tracks live and peak heap bytes,
//! so benchmarks can report real memory next to the tape's own accounting. A binary opts in
//! with `#[global_allocator] static A: CountingAlloc<MiMalloc> = CountingAlloc(MiMalloc);`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Wraps allocator `A`, counting bytes.
pub struct CountingAlloc<A>(pub A);

// SAFETY: every call forwards to the inner allocator unchanged; the counters are atomics.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            added(new_size);
        }
        p
    }
}

fn added(n: usize) {
    INSTALLED.store(true, Relaxed);
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

/// Live heap bytes, if a [`CountingAlloc`] is the global allocator.
pub fn live_bytes() -> Option<usize> {
    INSTALLED.load(Relaxed).then(|| LIVE.load(Relaxed))
}

/// Peak heap bytes since the last [`reset_peak`], if a [`CountingAlloc`] is installed.
pub fn peak_bytes() -> Option<usize> {
    INSTALLED.load(Relaxed).then(|| PEAK.load(Relaxed))
}

/// Starts a new peak measurement from the live bytes.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc v2's `mi_option_purge_delay`.
const PURGE_DELAY: std::ffi::c_int = 15;

/// Tells mimalloc (the lab's allocator) to keep freed memory in the process, so large
/// activation buffers are reused without page faults while small tape allocations stay fast.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set is mimalloc's documented, thread-safe option setter; the option
    // only changes when freed memory is returned to the OS.
    unsafe { mi_option_set(PURGE_DELAY, -1) }
}

/// This process's peak resident set (Linux's `VmHWM`), `None` where /proc does not say.
pub fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}
