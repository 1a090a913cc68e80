//! Optimizer steps allocate no per-parameter memory: after the first step (which creates the
//! state), a step of 8-bit or fp32 AdamW on 1M parameters (4 MiB) raises the heap's peak by less
//! than 16 KiB — scratch lives on the stack. The few bytes allowed are rayon's: its work-stealing
//! queues grow now and then depending on how the chunks were stolen (CI once saw 3,752 bytes).
//! Own test binary: it installs a counting allocator.

use rewind::Tensor;
use rewind::optim::{AdamW, AdamW8bit, Optimizer, ParamGroup};
use rewind_lab::alloc_counter::{CountingAlloc, live_bytes, peak_bytes, reset_peak};

#[global_allocator]
static GLOBAL: CountingAlloc<std::alloc::System> = CountingAlloc(std::alloc::System);

/// Far below the smallest copy of anything per parameter (the 8-bit state of 1M parameters is
/// 2 MiB, a gradient copy 4 MiB), above what a thread pool's queues take.
const SCHEDULER_SLACK: usize = 16 << 10;

fn extra_bytes_of_a_step(opt: &mut dyn Optimizer) -> usize {
    opt.step().unwrap(); // creates the state
    let before = live_bytes().unwrap();
    reset_peak();
    opt.step().unwrap();
    peak_bytes().unwrap() - before
}

#[test]
fn optimizer_steps_after_the_first_allocate_no_per_parameter_memory() {
    let n = 1 << 20;
    let p = Tensor::from_vec(vec![0.5f32; n], &[n])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    p.set_grad(Some(Tensor::from_vec(vec![1e-3f32; n], &[n]).unwrap()));
    let group = || vec![ParamGroup::new(vec![p.clone()], 1e-3, 0.01)];
    for (name, extra) in [
        ("8-bit", extra_bytes_of_a_step(&mut AdamW8bit::new(group()))),
        ("fp32", extra_bytes_of_a_step(&mut AdamW::new(group()))),
    ] {
        assert!(
            extra < SCHEDULER_SLACK,
            "{name} AdamW step allocated {extra} bytes (bound {SCHEDULER_SLACK})"
        );
    }
}
