//! The `rewind` command line: a thin shell over library functions that tests call too.

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rewind::bench::core::{self, Chain, MlpConfig};

#[derive(Parser)]
#[command(
    name = "rewind",
    version,
    about = "A small reverse-mode autodiff engine for studying gradient checkpointing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the engine: per-op tape overhead, matmul GFLOP/s and a residual-MLP training step.
    Bench {
        /// Repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Blocks in the residual MLP.
        #[arg(long, default_value_t = 16)]
        depth: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { reps, depth } => bench(reps, depth),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn bench(reps: usize, depth: usize) -> rewind::Result<()> {
    let threads = rayon::current_num_threads();
    println!("rewind core bench ({threads} threads, median of {reps})");
    let tanh = core::tape_overhead_us(Chain::Tanh, 1000, reps.max(200))?;
    let muladd = core::tape_overhead_us(Chain::MulAdd, 1000, reps.max(200))?;
    println!("tape overhead, 1000-op chain on 8 elements, forward+backward:");
    println!("  tanh     {tanh:.3} µs/op   (PyTorch 2.15 here: ≈ 4.1)");
    println!("  x*a+b    {muladd:.3} µs/op   (PyTorch 2.15 here: ≈ 5.3 per x*a+b, i.e. two ops)");
    let gemm = core::matmul_gflops(1024, reps)?;
    println!("matmul f32 1024³: {gemm:.1} GFLOP/s");
    let cfg = MlpConfig {
        depth,
        ..MlpConfig::default()
    };
    let (secs, gflops) = core::mlp_step(cfg, reps)?;
    println!(
        "residual MLP step ({} blocks {}→{}→{}, {} rows, f32, SGD): {:.3} s, {:.1} GFLOP/s effective = {:.0}% of the GEMM bench",
        cfg.depth,
        cfg.d,
        cfg.hidden,
        cfg.d,
        cfg.rows,
        secs,
        gflops,
        100.0 * gflops / gemm
    );
    Ok(())
}
