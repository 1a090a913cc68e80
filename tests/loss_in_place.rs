//! Cross-entropy's backward writes dL/dz over the logits when nothing else holds them (a
//! language model's logits, dropped once the loss is made): backward holds one logits-sized
//! buffer, not two, and the gradients are the same bits. With `retain_graph`, or while the
//! caller keeps the logits, it writes a fresh buffer. (Its own test binary: it counts the
//! heap, so its tests take turns.)

use rewind::indices::Indices;
use rewind::tape::saved_bytes;
use rewind::{BackwardOptions, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static TURN: Mutex<()> = Mutex::new(());

const ROWS: usize = 256;
const CLASSES: usize = 4096;
const D: usize = 32;
/// 4 MiB of f32 logits.
const LOGITS: usize = ROWS * CLASSES * 4;

/// x `[ROWS, D]` (no grad) and a head w `[D, CLASSES]` that trains, with targets.
fn head() -> (Tensor, Tensor, Indices) {
    let x: Vec<f32> = (0..ROWS * D)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.05)
        .collect();
    let w: Vec<f32> = (0..D * CLASSES)
        .map(|i| ((i * 5 % 31) as f32 - 15.0) * 0.01)
        .collect();
    // Every 9th row ignored (PyTorch's -100).
    let t: Vec<i64> = (0..ROWS)
        .map(|r| {
            if r % 9 == 0 {
                -100
            } else {
                (r * 37 % CLASSES) as i64
            }
        })
        .collect();
    (
        Tensor::from_vec(x, &[ROWS, D]).unwrap(),
        Tensor::from_vec(w, &[D, CLASSES])
            .unwrap()
            .requires_grad_(true)
            .unwrap(),
        Indices::new(t, &[ROWS]).unwrap(),
    )
}

/// w's gradient and the heap's rise above its level at the start of backward, with the
/// logits kept by the caller through backward or dropped before it.
fn backward_of_head(keep_logits: bool) -> (Vec<f32>, usize) {
    let (x, w, t) = head();
    let logits = x.matmul(&w).unwrap();
    let loss = logits.cross_entropy(&t, -100).unwrap();
    let kept = keep_logits.then_some(logits);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    loss.backward().unwrap();
    let rise = PEAK.load(Ordering::Relaxed) - before;
    drop(kept);
    drop(loss);
    assert_eq!(saved_bytes(), 0, "nothing stays counted as saved");
    (w.grad().unwrap().to_vec_f32(), rise)
}

#[test]
fn dropped_logits_take_their_gradient_in_place_with_the_same_bits() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let (kept_grad, kept_rise) = backward_of_head(true);
    let (dropped_grad, dropped_rise) = backward_of_head(false);
    // Bit for bit: the same arithmetic on each element, wherever the result is written.
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dropped_grad), bits(&kept_grad));
    // Kept: a fresh dL/dz (4 MiB) beside the logits, then dW (0.5 MiB). Dropped: only dW and
    // the matmul's scratch.
    assert!(
        kept_rise >= LOGITS,
        "kept logits: backward rose {kept_rise} bytes"
    );
    assert!(
        dropped_rise < LOGITS / 2,
        "dropped logits: backward rose {dropped_rise} bytes (a second logits buffer is {LOGITS})"
    );
}

#[test]
fn retain_graph_keeps_the_logits_for_a_second_backward() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let (x, w, t) = head();
    let loss = x.matmul(&w).unwrap().cross_entropy(&t, -100).unwrap();
    let opts = BackwardOptions {
        retain_graph: true,
        ..Default::default()
    };
    loss.backward_with(None, opts).unwrap();
    let once = w.grad().unwrap().to_vec_f32();
    loss.backward().unwrap();
    // The second backward read the same logits: the accumulated gradient is exactly twice
    // the first (g + g is exact in f32).
    let twice = w.grad().unwrap().to_vec_f32();
    for (i, (a, b)) in once.iter().zip(&twice).enumerate() {
        assert_eq!((2.0 * a).to_bits(), b.to_bits(), "element {i}");
    }
}
