//! Which f32 kernel runs: the fastest of those this CPU supports, timed on one thread the first
//! time a product is asked for (CPU features alone do not tell: two VMs of one CPU model have
//! ranked the same kernels in opposite orders). Every kernel gives the same bits
//! ([`super::spec`]), so the choice changes speed only, never a result.

use super::Layout;
use super::driver::drive;
use super::kernels::F32;
use super::spec::Spec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The chosen kernel's index in [`F32`]; `usize::MAX` until chosen.
static CHOSEN: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The f32 kernel products use now.
pub(super) fn chosen() -> &'static Spec<f32> {
    let i = CHOSEN.load(Ordering::Relaxed);
    if let Some(k) = F32.get(i) {
        return k;
    }
    let best = fastest();
    CHOSEN.store(best, Ordering::Relaxed);
    &F32[best]
}

/// Makes products use kernel `i` of [`F32`].
pub(super) fn choose(i: usize) {
    CHOSEN.store(i, Ordering::Relaxed);
}

/// Seconds one thread takes for a 192×512×384 product (the least of three, after a warm-up).
pub(super) fn time(kern: &Spec<f32>) -> f64 {
    let (m, k, n) = (192, 512, 384);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32).collect();
    let mut c = vec![0.0f32; m * n];
    let mut best = f64::INFINITY;
    for rep in 0..4 {
        let t = Instant::now();
        // SAFETY: the buffers hold m×k, k×n and m×n elements.
        unsafe {
            drive(
                kern,
                (m, k, n),
                &a,
                Layout::Normal,
                &b,
                Layout::Normal,
                false,
                c.as_mut_ptr(),
                false,
            )
        };
        if rep > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    best
}

/// The index of the fastest supported kernel (portable ones are timed only when no SIMD
/// kernel runs here: they are several times slower).
fn fastest() -> usize {
    let supported: Vec<usize> = (0..F32.len()).filter(|&i| (F32[i].supported)()).collect();
    let simd: Vec<usize> = supported
        .iter()
        .copied()
        .filter(|&i| !F32[i].name.starts_with("portable"))
        .collect();
    let candidates = if simd.is_empty() { supported } else { simd };
    match candidates.as_slice() {
        [] => F32.len() - 1,
        [only] => *only,
        many => {
            let timed: Vec<(usize, f64)> = many.iter().map(|&i| (i, time(&F32[i]))).collect();
            timed
                .iter()
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .map_or(F32.len() - 1, |t| t.0)
        }
    }
}
