//! Measurements behind `rewind bench`: medians of repeated runs, reported with the work done.
//! Timings live here and in `benches/`, never in pass/fail tests.

pub mod checkpoint;
pub mod core;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dist;
pub mod gemm;
pub mod memory;
pub mod plot;

use std::time::Instant;

/// Median wall time in seconds of `reps` runs of `f` (after one warm-up run).
pub fn median_secs(reps: usize, f: impl FnMut()) -> f64 {
    timed(reps, f).median
}

/// The median and range of `reps` timed runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median seconds.
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
}

/// Times `reps` runs of `f` after one warm-up run.
pub fn timed(reps: usize, f: impl FnMut()) -> Timing {
    timed_after(1, reps, f)
}

/// [`timed`] for work that can fail: the first error, if any, instead of the timing.
pub fn try_timed(reps: usize, mut f: impl FnMut() -> rewind::Result<()>) -> rewind::Result<Timing> {
    let mut out = Ok(());
    let t = timed(reps, || {
        if let Err(e) = f() {
            out = Err(e);
        }
    });
    out.map(|_| t)
}

/// Times `reps` runs of `f` after `warm_up` untimed ones.
pub fn timed_after(warm_up: usize, reps: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..warm_up {
        f();
    }
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    Timing {
        median: t[t.len() / 2],
        min: t[0],
        max: t[t.len() - 1],
    }
}
