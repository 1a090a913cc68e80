//! Profiling aid: the per-op tape overhead loop alone.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> rewind::Result<()> {
    let us = rewind_lab::bench::core::tape_overhead_us(
        rewind_lab::bench::core::Chain::Tanh,
        1000,
        2000,
    )?;
    println!("tanh chain: {us:.3} µs/op");
    Ok(())
}
