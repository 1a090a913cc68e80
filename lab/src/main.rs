//! The `rewind` command line: a thin shell over library functions that tests call too.

mod cli_checks;
mod cli_train;
use cli_train as train;

use clap::{Args, Parser, Subcommand};

#[global_allocator]
static GLOBAL: rewind_lab::alloc_counter::CountingAlloc<mimalloc::MiMalloc> =
    rewind_lab::alloc_counter::CountingAlloc(mimalloc::MiMalloc);
use rewind_lab::bench::core::{self, Chain, MlpConfig};

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
    /// Reproduce PyTorch's "element 0 of tensors does not require grad" failure of gradient
    /// checkpointing with frozen embeddings, explain it, fix it three ways; exits 3 if any
    /// reproduced behaviour did not hold.
    Repro(ReproArgs),
    /// Recompute vs store: sweep depths and checkpoint plans on the residual-MLP stack; writes
    /// a table, CSV and SVG plots under --out.
    Bench(BenchArgs),
    /// Fitting training into memory: parameter, gradient, optimizer-state and activation bytes
    /// for fp32 vs 8-bit AdamW, with and without AMP, freezing and checkpointing.
    Memory(MemoryArgs),
    /// Fine-tune the small transformer, or a GPT-2, Llama, Qwen2, GLM or ChatGLM3 checkpoint
    /// (--model DIR), on the synthetic corpus, a text file or conversations (--data) with any
    /// mix of checkpointing, AMP, 8-bit AdamW, accumulation, freezing, LoRA and padding; prints
    /// a JSON summary.
    Train(Box<train::TrainArgs>),
    /// Run the baseline, then checkpointing, accumulation, freezing, AMP, 8-bit AdamW, dynamic
    /// and grouped padding one at a time, then all together, on the same model and data;
    /// prints one table and the targets (exits 3 if one is not met), writes CSV and SVG.
    Compare(train::CompareArgs),
    /// The core engine's figures: per-op tape overhead, matmul GFLOP/s, a 16-block MLP step.
    BenchCore(BenchCoreArgs),
    /// The 16-block MLP's step shared by the ranks `mpirun -np N` started (or taken whole by
    /// one process): step time, rows/s, all-reduce time and the part the backward did not
    /// hide; one JSON line from rank 0.
    BenchDist(BenchDistArgs),
    /// A transformers checkpoint's token-weighted mean next-token loss and perplexity on a
    /// text file (one sample per paragraph, as train reads it), with or without a LoRA
    /// adapter: a table and one JSON line.
    Eval(EvalArgs),
    /// Continue a prompt with a transformers checkpoint (with or without a LoRA adapter),
    /// greedy by default, a token at a time through a key/value cache; --chat wraps it in the
    /// model's chat format (ChatGLM3's).
    Generate(GenerateArgs),
}

/// `rewind generate` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    /// A transformers checkpoint directory (as `train --model` takes).
    #[arg(long = "model", value_name = "DIR")]
    pub model: std::path::PathBuf,
    /// A PEFT LoRA adapter directory to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<std::path::PathBuf>,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Ask it as one user turn of the model's chat format and stop at the end of the answer.
    #[arg(long)]
    pub chat: bool,
    /// Tokens to add at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sample with this temperature (> 0) instead of taking the most likely token.
    #[arg(long, allow_hyphen_values = true)]
    pub temperature: Option<f64>,
    /// With --temperature: sample from the smallest set of tokens holding this much
    /// probability.
    #[arg(
        long,
        default_value_t = 1.0,
        requires = "temperature",
        allow_hyphen_values = true
    )]
    pub top_p: f64,
    /// With --temperature: the sampler's seed.
    #[arg(long, default_value_t = 0, requires = "temperature")]
    pub seed: u64,
    /// Also print one JSON line: prompt_ids, new_ids, text, tokens_per_s.
    #[arg(long)]
    pub json: bool,
}

/// `rewind eval` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    /// A transformers checkpoint directory: config.json, model.safetensors (or a sharded
    /// model.safetensors.index.json) and tokenizer.json (or SentencePiece's tokenizer.model).
    #[arg(long = "model", value_name = "DIR")]
    pub model: std::path::PathBuf,
    /// UTF-8 text; each paragraph (lines up to a blank line) is one sample.
    #[arg(long, value_name = "FILE")]
    pub text_file: std::path::PathBuf,
    /// Tokens kept per sample [default: the model's positions, at most 1024].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Samples per forward.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<std::path::PathBuf>,
}

/// `rewind repro` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct ReproArgs {
    /// Timed steps per fix (median reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Number of blocks (at least 2).
    #[arg(long, default_value_t = 8)]
    pub blocks: usize,
    /// Tell the story on this transformers checkpoint (any model `train --model` takes: LoRA
    /// on PEFT's default targets, a reentrant checkpoint around each layer, the fixes).
    #[arg(long = "model", value_name = "DIR", conflicts_with = "blocks")]
    pub model: Option<std::path::PathBuf>,
    /// With --model: use a tiny random model of its architecture made from its config.json
    /// (automatic when the checkpoint does not fit in memory).
    #[arg(long, requires = "model")]
    pub tiny: bool,
}

/// `rewind bench` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct BenchArgs {
    /// Timed steps per point (median and range reported; one warm-up step per depth); with
    /// --cuda, each kernel is timed max(reps, 10) times.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Depths to sweep.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64")]
    pub depths: Vec<usize>,
    /// Batch rows.
    #[arg(long, default_value_t = 2048)]
    pub rows: usize,
    /// Output folder for bench.csv and the plots.
    #[arg(long, default_value = "out/bench")]
    pub out: std::path::PathBuf,
    /// Instead: the GPU table (hgemm vs cuBLAS, 8-bit AdamW and loss scaling vs a device
    /// copy); needs the `cuda` feature and a CUDA device.
    #[arg(long)]
    pub cuda: bool,
    /// Instead: redraw the charts from a bench.csv an earlier run wrote (no measuring).
    #[arg(long)]
    pub from_csv: Option<std::path::PathBuf>,
}

/// `rewind memory` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct MemoryArgs {
    /// Blocks of the residual MLP (width d → 4d → d).
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// Width d.
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    /// Batch rows.
    #[arg(long, default_value_t = 512)]
    pub rows: usize,
    /// Timed steps per setup (median reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Instead: what fine-tuning this checkpoint takes, from its config.json alone (llama,
    /// qwen2, glm, chatglm): parameters, gradients, optimizer state and activations for full
    /// fine-tuning, LoRA and P-tuning v2 under each checkpoint plan.
    #[arg(long = "model", value_name = "DIR", conflicts_with_all = ["depth", "width", "rows"])]
    pub model: Option<std::path::PathBuf>,
    /// With --model: samples per step.
    #[arg(long, default_value_t = 1, requires = "model")]
    pub batch_size: usize,
    /// With --model: tokens per sample.
    #[arg(long, default_value_t = 512, requires = "model")]
    pub max_len: usize,
    /// With --model: the LoRA rank (THUDM's demo: 8).
    #[arg(long, default_value_t = 8, requires = "model")]
    pub lora_rank: usize,
    /// With --model: P-tuning v2's prefix positions (THUDM's demo: 128).
    #[arg(long, default_value_t = 128, requires = "model")]
    pub prefix_tokens: usize,
    /// With --model: the bytes of one of N data-parallel ranks (`mpirun -np N rewind train`),
    /// each taking --batch-size samples.
    #[arg(long, default_value_t = 1, requires = "model")]
    pub ranks: usize,
    /// With --model and --ranks: ZeRO stage (0: every rank keeps the whole optimizer state;
    /// 1: each its 1/N shard).
    #[arg(long, default_value_t = 0, requires = "model", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub zero: u8,
}

/// `rewind bench-core` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct BenchCoreArgs {
    /// Repetitions per measurement (the median is reported); the tape-overhead chains run
    /// max(reps, 200) times, as they take microseconds.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Blocks in the residual MLP.
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Also write every figure as JSON here (what `scripts/pytorch_side_by_side.py` reads).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// `rewind bench-dist` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct BenchDistArgs {
    /// Timed steps (the median is reported), after one untimed.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Blocks in the residual MLP.
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Rows of the whole step, shared by the ranks.
    #[arg(long, default_value_t = 2048)]
    pub rows: usize,
    /// MiB of each gradient bucket (as `rewind train --bucket-mb`).
    #[arg(long, value_name = "MIB", default_value_t = 25.0)]
    pub bucket_mb: f64,
}

/// How a command ended: its exit code is 0, 1 (an error while working), 2 (a usage error,
/// found before any work) or 3 (it ran, and a target or reproduced behaviour did not hold).
pub enum Ended {
    Done,
    NotMet,
}

fn main() {
    rewind_lab::alloc_counter::keep_freed_memory();
    let cli = Cli::parse();
    // `--model`'s checkpoint: its config.json is read once, here, for the checks and the run.
    let checked = match &cli.command {
        Command::Repro(a) => cli_checks::repro(a),
        Command::Bench(a) => cli_checks::bench(a).map(|_| None),
        Command::Memory(a) => cli_checks::memory(a),
        Command::Train(a) => cli_checks::train(a),
        Command::Compare(a) => cli_checks::compare(a).map(|_| None),
        Command::BenchCore(a) => cli_checks::bench_core(a).map(|_| None),
        Command::BenchDist(a) => cli_checks::bench_dist(a).map(|_| None),
        Command::Eval(a) => cli_checks::eval(a).map(Some),
        Command::Generate(a) => cli_checks::generate(a).map(Some),
    };
    let checkpoint = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Repro(a) => match checkpoint {
            Some(ckpt) => repro_model(ckpt, a.tiny, a.reps),
            None => repro(a.reps, a.blocks),
        },
        Command::Bench(a) if a.cuda => cuda_bench(a.reps),
        Command::Bench(BenchArgs {
            from_csv: Some(csv),
            out,
            ..
        }) => replot(&csv, &out),
        Command::Bench(a) => bench(a.reps, a.depths, a.rows, &a.out),
        Command::Train(args) => train::run(&args, checkpoint),
        Command::Compare(args) => train::compare(&args),
        Command::BenchDist(a) => bench_dist(&a),
        Command::BenchCore(a) => {
            bench_core(a.reps, a.depth, a.json.as_deref()).map(|_| Ended::Done)
        }
        Command::Memory(a) => match checkpoint {
            Some(ckpt) => {
                let t = rewind_lab::memory_model::table_per_rank(
                    &ckpt,
                    a.batch_size,
                    a.max_len,
                    a.lora_rank,
                    a.prefix_tokens,
                    rewind_lab::memory_model::Ranks {
                        ranks: a.ranks,
                        zero: a.zero == 1,
                    },
                );
                t.map(|t| {
                    print!("{t}");
                    Ended::Done
                })
            }
            None => memory(a.depth, a.width, a.rows, a.reps),
        },
        Command::Eval(a) => eval(a, checkpoint),
        Command::Generate(a) => generate(a, checkpoint),
    };
    match result {
        Ok(Ended::Done) => {}
        Ok(Ended::NotMet) => std::process::exit(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn eval(
    a: EvalArgs,
    checkpoint: Option<rewind_lab::models::lm::Checkpoint>,
) -> rewind::Result<Ended> {
    let model = match checkpoint {
        Some(c) => c,
        None => rewind_lab::models::lm::Checkpoint::open(&a.model)?,
    };
    let opts = rewind_lab::eval::EvalOptions {
        model,
        text_file: a.text_file,
        max_len: a.max_len,
        batch_size: a.batch_size,
        adapter: a.adapter,
    };
    let r = rewind_lab::eval::run(&opts)?;
    let adapter = opts
        .adapter
        .as_ref()
        .map_or(String::new(), |d| format!(" + adapter {}", d.display()));
    println!(
        "rewind eval: {}{adapter} on {} ({} threads)",
        a.model.display(),
        opts.text_file.display(),
        rewind::cpu::threads()
    );
    print!("{}", r.table());
    if r.skipped > 0 {
        println!(
            "  ({} paragraphs of fewer than 2 tokens left out)",
            r.skipped
        );
    }
    println!("{}", r.json());
    Ok(Ended::Done)
}

fn generate(
    a: GenerateArgs,
    checkpoint: Option<rewind_lab::models::lm::Checkpoint>,
) -> rewind::Result<Ended> {
    use rewind_lab::generate::{Choice, GenerateOptions};
    let model = match checkpoint {
        Some(c) => c,
        None => rewind_lab::models::lm::Checkpoint::open(&a.model)?,
    };
    let choice = match a.temperature {
        None => Choice::Greedy,
        Some(temperature) => Choice::Sample {
            temperature,
            top_p: a.top_p,
            seed: a.seed,
        },
    };
    let opts = GenerateOptions {
        model,
        adapter: a.adapter,
        prompt: a.prompt,
        chat: a.chat,
        max_new_tokens: a.max_new_tokens,
        choice,
    };
    let g = rewind_lab::generate::run(&opts)?;
    println!("{}", g.text);
    eprintln!(
        "({} prompt tokens, {} new, {:.1} tokens/s, {} threads)",
        g.prompt_ids.len(),
        g.new_ids.len(),
        g.tokens_per_s(),
        rewind::cpu::threads()
    );
    if a.json {
        println!("{}", g.json());
    }
    Ok(Ended::Done)
}

fn repro_model(
    ckpt: rewind_lab::models::lm::Checkpoint,
    tiny: bool,
    reps: usize,
) -> rewind::Result<Ended> {
    // Forced by --tiny, or when the weights are absent or their f32 copy with LoRA's step
    // would not fit.
    let s = ckpt.sizes;
    let (d, v) = (s.d as f64, s.vocab as f64);
    let weights = 4.0 * (2.0 * v * d + s.layers as f64 * 12.0 * d * d);
    let has_weights = ["model.safetensors", "model.safetensors.index.json"]
        .iter()
        .any(|f| ckpt.dir.join(f).exists());
    let tiny = if tiny {
        Some("--tiny".to_string())
    } else if !has_weights {
        Some("its weights are not in the directory".to_string())
    } else if 2.0 * weights > cli_checks::memory_limit() {
        Some(format!(
            "its f32 weights (≈ {:.1} GiB) and a step do not fit this machine's memory",
            weights / (1u64 << 30) as f64
        ))
    } else {
        None
    };
    let opts = rewind_lab::repro_model::ModelStoryOptions { ckpt, tiny, reps };
    let report = rewind_lab::repro_model::run_model_story(&opts, &mut |line| println!("{line}"))?;
    report_checks(&report)
}

fn repro(reps: usize, blocks: usize) -> rewind::Result<Ended> {
    let mut opts = rewind_lab::repro::ReproOptions {
        reps,
        ..Default::default()
    };
    opts.model.blocks = blocks;
    let report = rewind_lab::repro::run_story(&opts, &mut |line| println!("{line}"))?;
    report_checks(&report)
}

/// Prints which reproduced behaviours held; `NotMet` if one did not.
fn report_checks(report: &rewind_lab::repro::ReproReport) -> rewind::Result<Ended> {
    for w in rewind::warnings::take() {
        eprintln!("warning: {w}");
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.held)
        .map(|c| c.what.as_str())
        .collect();
    if failed.is_empty() {
        println!("\nAll {} reproduced behaviours held.", report.checks.len());
    } else {
        println!(
            "\n{} of {} behaviours did NOT hold:",
            failed.len(),
            report.checks.len()
        );
        failed.iter().for_each(|f| println!("  - {f}"));
    }
    Ok(if failed.is_empty() {
        Ended::Done
    } else {
        Ended::NotMet
    })
}

fn bench(
    reps: usize,
    depths: Vec<usize>,
    rows: usize,
    out: &std::path::Path,
) -> rewind::Result<Ended> {
    use rewind_lab::bench::checkpoint as ck;
    let cfg = ck::SweepConfig {
        depths,
        rows,
        reps,
        ..Default::default()
    };
    println!(
        "recompute vs store: residual MLP {}→{}→{}, {} rows, f32, SGD; {} threads; median of {} steps",
        cfg.d,
        cfg.hidden,
        cfg.d,
        cfg.rows,
        rewind::cpu::threads(),
        cfg.reps
    );
    let rows = ck::sweep(&cfg, |r| eprintln!("  measured L = {} {}", r.depth, r.plan))?;
    print!("{}", ck::table(&rows));
    let write = |name: &str, text: String| {
        let path = out.join(name);
        rewind::atomic_file::write_atomic("bench", &path, text.as_bytes())
    };
    std::fs::create_dir_all(out).map_err(|e| rewind::Error::io("bench", out, e))?;
    write("bench.csv", ck::csv(&rows))?;
    let at = if cfg.depths.contains(&16) {
        16
    } else {
        cfg.depths[0]
    };
    let (tradeoff, by_depth) = ck::plots(&rows, at)?;
    write("tradeoff.svg", tradeoff)?;
    write("memory_vs_depth.svg", by_depth)?;
    println!(
        "wrote {}/bench.csv, tradeoff.svg, memory_vs_depth.svg",
        out.display()
    );
    Ok(Ended::Done)
}

fn replot(csv: &std::path::Path, out: &std::path::Path) -> rewind::Result<Ended> {
    use rewind_lab::bench::checkpoint as ck;
    let text = std::fs::read_to_string(csv).map_err(|e| rewind::Error::io("bench", csv, e))?;
    let rows = ck::rows_from_csv(&text)?;
    let at = if rows.iter().any(|r| r.depth == 16) {
        16
    } else {
        rows.first().map_or(0, |r| r.depth)
    };
    let (tradeoff, by_depth) = ck::plots(&rows, at)?;
    for (name, svg) in [
        ("tradeoff.svg", tradeoff),
        ("memory_vs_depth.svg", by_depth),
    ] {
        rewind::atomic_file::write_atomic("bench", &out.join(name), svg.as_bytes())?;
    }
    println!(
        "redrew {} points into {}/tradeoff.svg, memory_vs_depth.svg",
        rows.len(),
        out.display()
    );
    Ok(Ended::Done)
}

#[cfg(feature = "cuda")]
fn cuda_bench(reps: usize) -> rewind::Result<Ended> {
    let gpu = rewind::cuda::Gpu::new(0)?;
    println!(
        "rewind bench --cuda: device 0 ({}), median of {} runs each, stream synchronised",
        gpu.arch(),
        reps.max(10)
    );
    print!(
        "{}",
        rewind_lab::bench::cuda::report(&gpu, reps.max(10), 1 << 28)?
    );
    Ok(Ended::Done)
}

#[cfg(not(feature = "cuda"))]
fn cuda_bench(_reps: usize) -> rewind::Result<Ended> {
    Err(rewind::Error::InvalidArgument {
        op: "bench",
        msg: "this binary was built without the `cuda` feature: cargo run --release --features cuda -- bench --cuda".into(),
    })
}

fn memory(depth: usize, width: usize, rows: usize, reps: usize) -> rewind::Result<Ended> {
    println!(
        "residual MLP, {depth} blocks {width}→{}→{width}, {rows} rows; one training step each (median of {reps}):",
        4 * width
    );
    let rows = rewind_lab::bench::memory::measure(depth, width, rows, reps)?;
    print!("{}", rewind_lab::bench::memory::table(&rows));
    Ok(Ended::Done)
}

fn bench_dist(a: &BenchDistArgs) -> rewind::Result<Ended> {
    let sizes = rewind_lab::dist::BucketSizes {
        bytes: (a.bucket_mb * (1u64 << 20) as f64) as usize,
        ..Default::default()
    };
    let reducer = rewind_lab::dist::from_launcher(sizes, rewind_lab::dist::Backend::Mpi)?;
    let lead = reducer.as_ref().is_none_or(|r| r.rank() == 0);
    let cfg = MlpConfig {
        depth: a.depth,
        rows: a.rows,
        ..MlpConfig::default()
    };
    let s = rewind_lab::bench::dist::mlp_step(cfg, a.reps, reducer)?;
    if lead {
        println!(
            "{}",
            serde_json::json!({
                "ranks": s.ranks,
                "threads": rewind::cpu::threads(),
                "rows": s.rows,
                "depth": cfg.depth,
                "step_s": s.step.median,
                "step_min_s": s.step.min,
                "step_max_s": s.step.max,
                "rows_per_s": s.rows as f64 / s.step.median,
                "all_reduce_s": s.all_reduce_s,
                "all_reduce_waited_s": s.waited_s,
            })
        );
    }
    Ok(Ended::Done)
}

fn bench_core(reps: usize, depth: usize, json: Option<&std::path::Path>) -> rewind::Result<()> {
    let threads = rewind::cpu::threads();
    println!("rewind core bench ({threads} threads, median of {reps})");
    let tanh = core::tape_overhead_us(Chain::Tanh, 1000, reps.max(200))?;
    let muladd = core::tape_overhead_us(Chain::MulAdd, 1000, reps.max(200))?;
    println!("tape overhead, 1000-op chain on 8 elements, forward+backward:");
    println!("  tanh     {tanh:.3} µs/op");
    println!("  x*a+b    {muladd:.3} µs/op (two ops per x*a+b)");
    let gemm = core::matmul_gflops(1024, reps)?;
    println!("matmul f32 1024³: {gemm:.1} GFLOP/s");
    let cfg = MlpConfig {
        depth,
        ..MlpConfig::default()
    };
    println!(
        "residual MLP step ({} blocks {}→{}→{}, {} rows, f32, SGD, non-reentrant checkpointing):",
        cfg.depth, cfg.d, cfg.hidden, cfg.d, cfg.rows
    );
    let gemms = core::step_gemms_secs(cfg, reps)?;
    println!(
        "  its matmuls alone ({} × 6 products, no tape) {gemms:.3} s = {:.1} GFLOP/s",
        cfg.depth,
        12.0 * (cfg.depth * cfg.rows * cfg.d * cfg.hidden) as f64 / gemms / 1e9
    );
    let mut steps = serde_json::Map::new();
    let mut peaks = serde_json::Map::new();
    let mut store = f64::NAN;
    for plan in core::StepPlan::ALL {
        let (secs, gflops, peak) = core::mlp_step_under(cfg, plan, reps, None)?;
        peaks.insert(plan.name().into(), serde_json::json!(peak));
        if plan == core::StepPlan::Store {
            store = secs;
        }
        println!(
            "  {:<11} {:.3} s  ×store {:.2}  ×matmuls {:.2}  {:.1} GFLOP/s effective = {:.0}% of the GEMM bench",
            plan.name(),
            secs,
            secs / store,
            secs / gemms,
            gflops,
            100.0 * gflops / gemm
        );
        steps.insert(plan.name().into(), serde_json::json!(secs));
    }
    let gemm_bf16 = core::matmul_gflops_in(1024, reps, rewind::DType::BF16)?;
    println!(
        "bf16 autocast (products in bf16 with f32 accumulation; matmul bf16 1024³: {gemm_bf16:.1} GFLOP/s):"
    );
    let (mut steps_bf16, mut peaks_bf16) = (serde_json::Map::new(), serde_json::Map::new());
    for plan in [
        core::StepPlan::Store,
        core::StepPlan::Every,
        core::StepPlan::Sqrt,
    ] {
        let (secs, _, peak) = core::mlp_step_under(cfg, plan, reps, Some(rewind::DType::BF16))?;
        let f32_peak = peaks[plan.name()].as_u64().unwrap_or(0) as f64;
        println!(
            "  {:<11} {secs:.3} s  ×f32 {:.2}  peak saved {:.1} MiB = {:.2}× f32's",
            plan.name(),
            secs / steps[plan.name()].as_f64().unwrap_or(f64::NAN),
            peak as f64 / (1 << 20) as f64,
            peak as f64 / f32_peak
        );
        steps_bf16.insert(plan.name().into(), serde_json::json!(secs));
        peaks_bf16.insert(plan.name().into(), serde_json::json!(peak));
    }
    let n = 1 << 24;
    let fp32 = core::adamw_step_ms(n, false, reps)?;
    let q8 = core::adamw_step_ms(n, true, reps)?;
    println!("AdamW step on {n} parameters: fp32 {fp32:.1} ms, 8-bit {q8:.1} ms");
    if let Some(path) = json {
        let v = serde_json::json!({
            "threads": threads,
            "tape_tanh_us_per_op": tanh,
            "tape_muladd_us_per_op": muladd,
            "gemm_1024_gflops": gemm,
            "mlp": {"depth": cfg.depth, "d": cfg.d, "hidden": cfg.hidden, "rows": cfg.rows},
            "mlp_step_s": steps,
            "mlp_peak_saved_bytes": peaks,
            "gemm_1024_bf16_gflops": gemm_bf16,
            "mlp_step_bf16_s": steps_bf16,
            "mlp_peak_saved_bytes_bf16": peaks_bf16,
            "mlp_step_matmuls_s": gemms,
            "adamw_fp32_ms": fp32,
            "adamw_8bit_ms": q8,
            "adamw_params": n,
        });
        rewind::atomic_file::write_atomic("bench-core", path, v.to_string().as_bytes())?;
    }
    Ok(())
}
