//! Optimizer steps allocate nothing: after the first step (which creates the state), a step of
//! 8-bit or fp32 AdamW on 1M parameters does not raise the heap's peak by a single byte
//! (scratch lives on the stack). Own test binary: it installs a counting allocator.

use rewind::Tensor;
use rewind::optim::{AdamW, AdamW8bit, Optimizer, ParamGroup};
use rewind_lab::alloc_counter::{CountingAlloc, live_bytes, peak_bytes, reset_peak};

#[global_allocator]
static GLOBAL: CountingAlloc<std::alloc::System> = CountingAlloc(std::alloc::System);

fn extra_bytes_of_a_step(opt: &mut dyn Optimizer) -> usize {
    opt.step().unwrap(); // creates the state
    let before = live_bytes().unwrap();
    reset_peak();
    opt.step().unwrap();
    peak_bytes().unwrap() - before
}

#[test]
fn optimizer_steps_after_the_first_allocate_nothing() {
    let n = 1 << 20;
    let p = Tensor::from_vec(vec![0.5f32; n], &[n])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    p.set_grad(Some(Tensor::from_vec(vec![1e-3f32; n], &[n]).unwrap()));
    let group = || vec![ParamGroup::new(vec![p.clone()], 1e-3, 0.01)];
    // 4 MiB of parameters; a copy of anything per step would show here.
    for (name, extra) in [
        ("8-bit", extra_bytes_of_a_step(&mut AdamW8bit::new(group()))),
        ("fp32", extra_bytes_of_a_step(&mut AdamW::new(group()))),
    ] {
        assert_eq!(extra, 0, "{name} AdamW step allocated {extra} bytes");
    }
}
