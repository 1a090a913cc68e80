//! Profiling aid: the 16-block residual-MLP step alone under one plan, for `perf record`.
//! Usage: `step_profile [store|every|sqrt4|every+dots] [REPS]`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rewind_lab::bench::core::{MlpConfig, StepPlan, mlp_step_with};

fn main() -> rewind::Result<()> {
    rewind_lab::alloc_counter::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("store", String::as_str);
    let Some(plan) = StepPlan::ALL.into_iter().find(|p| p.name() == name) else {
        return Err(rewind::Error::invalid(
            "step_profile",
            format!("unknown plan {name:?}"),
        ));
    };
    let reps = match args.get(2).map(|r| r.parse::<usize>()) {
        None => 10,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => return Err(rewind::Error::invalid("step_profile", "REPS: a count ≥ 1")),
    };
    let (secs, gflops) = mlp_step_with(MlpConfig::default(), plan, reps)?;
    println!("{name}: {secs:.3} s, {gflops:.1} GFLOP/s effective");
    Ok(())
}
