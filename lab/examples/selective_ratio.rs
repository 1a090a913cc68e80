//! Alternates stored and selective (save-matmuls) steps of the 16-block MLP, `rounds` times,
//! and prints the median of each and their ratio: the ratio without the drift of a sweep.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rewind_lab::bench::core::{MlpConfig, StepPlan, mlp_step_with};
fn main() -> rewind::Result<()> {
    rewind_lab::alloc_counter::keep_freed_memory();
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (mut store, mut dots, mut every) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        store.push(mlp_step_with(MlpConfig::default(), StepPlan::Store, 3)?.0);
        dots.push(mlp_step_with(MlpConfig::default(), StepPlan::EveryDots, 3)?.0);
        every.push(mlp_step_with(MlpConfig::default(), StepPlan::Every, 3)?.0);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, d, e) = (med(&mut store), med(&mut dots), med(&mut every));
    println!(
        "store {s:.3} s  every+dots {d:.3} s ({:.2}×)  every {e:.3} s ({:.2}×)  [{rounds} rounds, ranges store {:.3}–{:.3}, dots {:.3}–{:.3}]",
        d / s,
        e / s,
        store[0],
        store[rounds - 1],
        dots[0],
        dots[rounds - 1]
    );
    Ok(())
}
