//! `rewind train` and `rewind compare`: flags → [`TrainConfig`], a progress bar, the summary.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rewind_lab::fmt_mib;
use rewind_lab::models::lm::Checkpoint;
use rewind_lab::train::{
    self, AmpChoice, FreezeChoice, OptimChoice, PaddingChoice, PlanChoice, PolicyChoice, StepStats,
    TrainConfig, Trainer,
};
use std::path::PathBuf;

use crate::Ended;

/// Flags shared by `train` and `compare`: the model, the data and the run length.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct ModelArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 40)]
    pub steps: u64,
    /// Seed of the model, data order and generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Width.
    #[arg(long, default_value_t = 64)]
    pub d: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    /// Longest sequence (position table); longer samples are truncated [default: 128, or the
    /// model's positions when --model has fewer].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Byte-level BPE vocabulary size (the 256 bytes, `<|endoftext|>`, then merges).
    #[arg(long, default_value_t = 512)]
    pub vocab: usize,
    /// Samples in the synthetic corpus (10% held out for the evaluation loss).
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Samples per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-3, allow_hyphen_values = true)]
    pub lr: f64,
    /// Train on this UTF-8 text file (one sample per paragraph) instead of the synthetic corpus.
    #[arg(long)]
    pub text_file: Option<PathBuf>,
}

/// `rewind train` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Fine-tune the model in this transformers checkpoint directory (config.json with
    /// model_type gpt2, llama, qwen2, chatglm or glm; model.safetensors or a sharded index;
    /// tokenizer.json or SentencePiece's tokenizer.model)
    /// instead of the lab's transformer; its config sets the sizes, so --d, --heads, --layers
    /// and --vocab do not apply. With --lora-rank, LoRA goes on PEFT's default targets (or
    /// --lora-targets) and everything else is frozen, as PEFT does.
    #[arg(long = "model", value_name = "DIR", conflicts_with_all = ["d", "heads", "layers", "vocab"])]
    pub model_dir: Option<PathBuf>,
    /// Train on this JSON-lines conversation file (THUDM's finetune_demo format:
    /// `{"conversations": [{"role": "system"|"user"|"assistant", "content": …}, …]}` per line),
    /// rendered in the model's chat format (ChatGLM3's) with the loss on the assistant's turns.
    #[arg(
        long = "data",
        value_name = "FILE.jsonl",
        requires = "model_dir",
        conflicts_with = "text_file"
    )]
    pub data_file: Option<PathBuf>,
    /// transformers' `activation_checkpointing_enable(every_n_layers=N)` (5.x; `gradient_
    /// checkpointing_enable` is its deprecated alias): every N-th block checkpointed,
    /// non-reentrant, and `enable_input_require_grads()` on — why today's transformers no longer
    /// fails. Replaces --checkpoint, --checkpoint-mode and --enable-input-require-grads.
    #[arg(long, value_name = "N", conflicts_with_all = ["checkpoint", "checkpoint_mode", "enable_input_require_grads"])]
    pub hf_activation_checkpointing: Option<usize>,
    /// Checkpoint plan: none, every (every block), sqrt (√L segments), every-nth:N (every N-th
    /// block), budget:<bytes> (e.g. budget:8MiB: least recomputation within that many saved bytes).
    #[arg(long, default_value = "none")]
    pub checkpoint: PlanChoice,
    /// Checkpoint mode: reentrant (PyTorch's use_reentrant=True) or non-reentrant.
    #[arg(long, default_value = "non-reentrant", value_parser = train::config::parse_mode)]
    pub checkpoint_mode: rewind::checkpoint::CheckpointMode,
    /// What checkpointed segments keep (selective checkpointing, non-reentrant only):
    /// recompute-all, save-matmuls (JAX's dots_saveable), or save-names:NAME[,NAME…] from q,
    /// k, v, attn_probs, attn_context, mlp_hidden, mlp_act (JAX's save_only_these_names).
    #[arg(long, default_value = "recompute-all")]
    pub checkpoint_policy: PolicyChoice,
    /// Make the token embedding's output require grad (HF's enable_input_require_grads), the
    /// fix that keeps reentrant checkpointing working with frozen embeddings.
    #[arg(long)]
    pub enable_input_require_grads: bool,
    /// Mixed precision: `--amp` or `--amp fp16` for fp16 autocast with dynamic loss scaling
    /// (GradScaler, PyTorch's CUDA recipe); `--amp bf16` for bf16 autocast without scaling
    /// (PyTorch's CPU recipe, `torch.autocast("cpu")`).
    #[arg(long, num_args = 0..=1, default_missing_value = "fp16")]
    pub amp: Option<AmpChoice>,
    /// Optimizer: sgd (momentum 0.9), adamw (fp32 state), adamw8bit (blockwise 8-bit state).
    #[arg(long, default_value = "adamw")]
    pub optimizer: OptimChoice,
    /// Weight decay (decoupled for AdamW).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub weight_decay: f64,
    /// Clip the gradients' total L2 norm to this before each step (PyTorch's
    /// clip_grad_norm_; under AMP after unscaling) [default: no clipping].
    #[arg(long, value_name = "NORM")]
    pub max_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub accumulation: usize,
    /// Freeze: none, embeddings, lower:N (the first N blocks), or embeddings+lower:N.
    #[arg(long, default_value = "none")]
    pub freeze: FreezeChoice,
    /// LoRA rank on the attention q/v projections; base weights, embeddings and head frozen (0: off).
    #[arg(long, default_value_t = 0)]
    pub lora_rank: usize,
    /// With --lora-rank: LoRA's α (the update is scaled by α / rank) [default: 2 × rank;
    /// THUDM's ChatGLM3 demo uses 32 with rank 8].
    #[arg(long, requires = "lora_rank", allow_hyphen_values = true)]
    pub lora_alpha: Option<f64>,
    /// With --model and --lora-rank: PEFT's lora_dropout on the adapters' input (THUDM's
    /// demo: 0.1), its masks replayed exactly by checkpoint recomputation.
    #[arg(long, default_value_t = 0.0, requires_all = ["model_dir", "lora_rank"], allow_hyphen_values = true)]
    pub lora_dropout: f64,
    /// With a ChatGLM3 or GLM --model: P-tuning v2 with this many prefix positions
    /// (ChatGLM's pre_seq_len; THUDM's demo uses 128): a prefix encoder gives every layer
    /// past keys and values, all base weights frozen.
    #[arg(
        long,
        value_name = "N",
        requires = "model_dir",
        conflicts_with = "lora_rank"
    )]
    pub prefix_tokens: Option<usize>,
    /// With --prefix-tokens: encode the prefix through a two-layer tanh MLP
    /// (ChatGLM's prefix_projection).
    #[arg(long, requires = "prefix_tokens")]
    pub prefix_projection: bool,
    /// Padding: fixed (to --max-len), dynamic (to the batch's longest), grouped (length-grouped batches).
    #[arg(long, default_value = "dynamic")]
    pub padding: PaddingChoice,
    /// Save the run (weights, optimizer, scaler, generator, data position) here at the end;
    /// written to a temporary file, synced and renamed, so a kill never leaves a broken save.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// With --model: the projections that get LoRA, PEFT's target_modules [default: PEFT's for
    /// the family: c_attn for GPT-2, q_proj,v_proj for Llama and Qwen2]. GPT-2: c_attn, c_proj
    /// (the attention output and the MLP down projection) and c_fc; Llama and Qwen2: q_proj,
    /// k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    #[arg(long, value_delimiter = ',', requires = "model_dir")]
    pub lora_targets: Option<Vec<String>>,
    /// With --model and --lora-rank: write the trained LoRA adapter here in PEFT's format
    /// (adapter_model.safetensors, adapter_config.json) at the end; with --prefix-tokens, the
    /// trained prefix encoder (prefix_encoder.safetensors under THUDM's names,
    /// prefix_config.json). `eval` and `generate` take either with --adapter.
    #[arg(long, value_name = "DIR", requires = "model_dir")]
    pub save_adapter: Option<PathBuf>,
    /// With --model and --lora-rank: merge the adapter into the base weights at the end and write
    /// the model here as transformers' save_pretrained does (config.json, model.safetensors).
    #[arg(long, value_name = "DIR", requires_all = ["model_dir", "lora_rank"])]
    pub merge: Option<PathBuf>,
    /// Also save every N steps (to --save), so an interrupted run loses at most N steps.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Continue the run saved here (pass the same training flags; --steps more steps).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Under `mpirun -np N`: MiB of each gradient bucket all-reduced during the backward
    /// (PyTorch DDP's bucket_cap_mb).
    #[arg(long, value_name = "MIB", default_value_t = 25.0)]
    pub bucket_mb: f64,
    /// Under `mpirun -np N`: MiB of the first bucket (the last layers' gradients, ready first).
    #[arg(long, value_name = "MIB", default_value_t = 1.0)]
    pub first_bucket_mb: f64,
    /// Under `mpirun -np N`: seconds to wait for the other ranks before ending the job as
    /// stuck (a rank that dies is reported by mpirun at once).
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub dist_timeout: f64,
    /// Under `mpirun -np N`: ZeRO stage — 0: every rank keeps the whole optimizer state; 1:
    /// each keeps its 1/N shard (gradients reduce-scattered, parameters all-gathered).
    #[arg(long, value_name = "STAGE", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub zero: u8,
    /// Under `mpirun -np N`: the transport — mpi (CPUs) or nccl (each rank's GPU; needs the
    /// `nccl` feature; ranks meet through MPI).
    #[arg(long, value_name = "BACKEND", default_value = "mpi")]
    pub dist_backend: rewind_lab::dist::Backend,
}

impl ModelArgs {
    /// The flags' defaults.
    pub fn defaults() -> ModelArgs {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            model: ModelArgs,
        }
        <Only as clap::Parser>::parse_from(["rewind"]).model
    }

    /// `--max-len` as given, else its default.
    pub fn max_len(&self) -> usize {
        self.max_len.unwrap_or(DEFAULT_MAX_LEN)
    }

    /// The configuration these flags describe, other choices at their defaults.
    pub fn config(&self) -> TrainConfig {
        let mut cfg = TrainConfig {
            d: self.d,
            heads: self.heads,
            layers: self.layers,
            max_len: self.max_len(),
            vocab: self.vocab,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            // One file, however it is named: resume compares the canonical path.
            text_file: self
                .text_file
                .as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            ..TrainConfig::default()
        };
        cfg.corpus.samples = self.samples;
        cfg
    }
}

impl TrainArgs {
    /// The run's configuration; `ckpt` is `--model`'s checkpoint, opened once by the checks.
    fn config(&self, ckpt: Option<Checkpoint>) -> TrainConfig {
        let mut base = self.model.config();
        if let Some(ckpt) = ckpt {
            let c = ckpt.sizes;
            base.lora_targets = ckpt
                .family
                .default_lora_targets
                .iter()
                .map(|t| t.to_string())
                .collect();
            base.d = c.d;
            base.heads = c.heads;
            base.layers = c.layers;
            base.vocab = c.vocab;
            base.max_len = self
                .model
                .max_len
                .unwrap_or(DEFAULT_MAX_LEN.min(c.positions));
            base.model = Some(ckpt);
        }
        let (plan, mode, input_grads) = match self.hf_activation_checkpointing {
            Some(n) => (
                PlanChoice::EveryNth(n.max(1)),
                rewind::checkpoint::CheckpointMode::NonReentrant,
                true,
            ),
            None => (
                self.checkpoint,
                self.checkpoint_mode,
                self.enable_input_require_grads,
            ),
        };
        TrainConfig {
            plan,
            mode,
            policy: self.checkpoint_policy.clone(),
            enable_input_require_grads: input_grads,
            amp: self.amp.unwrap_or_default(),
            optimizer: self.optimizer,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            accumulation: self.accumulation,
            freeze: self.freeze,
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            prefix_tokens: self.prefix_tokens.unwrap_or(0),
            prefix_projection: self.prefix_projection,
            lora_targets: self
                .lora_targets
                .clone()
                .unwrap_or(base.lora_targets.clone()),
            padding: self.padding,
            // One file, however it is named: resume compares the canonical path.
            data_file: self
                .data_file
                .as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            ..base
        }
    }
}

fn io_err(what: &std::path::Path, e: std::io::Error) -> rewind::Error {
    rewind::Error::io("train", what, e)
}

/// Runs `rewind train`: saves every `--save-every` steps, prints the JSON summary, then
/// saves the end of the run.
pub fn run(args: &TrainArgs, ckpt: Option<Checkpoint>) -> rewind::Result<Ended> {
    let sizes = rewind_lab::dist::BucketSizes {
        first_bytes: (args.first_bucket_mb * (1u64 << 20) as f64) as usize,
        bytes: (args.bucket_mb * (1u64 << 20) as f64) as usize,
        timeout: std::time::Duration::from_secs_f64(args.dist_timeout),
    };
    let dist = rewind_lab::dist::from_launcher(sizes, args.dist_backend)?;
    let ranks = dist.as_ref().map_or(1, |r| r.size());
    let mut cfg = args.config(ckpt);
    // --accumulation is per rank: a step takes that many micro-batches on every rank.
    cfg.accumulation *= ranks;
    let made = match &args.resume {
        Some(p) => Trainer::resume(cfg.clone(), p),
        None => Trainer::new(cfg.clone()),
    };
    let mut trainer = match made {
        // A budget is checked against block costs measured on the model: a usage error still.
        Err(rewind::Error::InvalidArgument { op: "plan", msg })
            if matches!(cfg.plan, PlanChoice::Budget(_)) =>
        {
            eprintln!("error: --checkpoint {}: {msg}", cfg.plan);
            std::process::exit(2);
        }
        other => other?,
    };
    if let Some(r) = dist {
        trainer.set_dist(r, args.zero == 1)?;
        rewind_lab::dist::abort_on_panic(trainer.rank(), ranks);
    }
    // Under data parallelism rank 0 reports and saves; the others train alongside.
    let lead = trainer.rank() == 0;
    if lead {
        eprintln!(
            "training {} blocks d={} ({} trainable parameters in {} tensors), plan {} [{}], {} steps from step {}",
            cfg.layers,
            cfg.d,
            trainer.trainable_params(),
            trainer.trainable_tensors(),
            trainer.segmentation().describe(),
            train::config::mode_name(cfg.mode),
            args.model.steps,
            trainer.steps_done()
        );
    }
    if trainer.data.skipped > 0 {
        eprintln!(
            "note: {} conversations left out: the first --max-len {} tokens hold none of their assistant turns",
            trainer.data.skipped, cfg.max_len
        );
    }
    let bar = if args.quiet || !lead {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.model.steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .expect("static template is valid"),
    );
    let (mut tokens, mut secs, mut peak) = (0usize, 0.0f64, 0usize);
    let mut after_step = |t: &Trainer, s: &StepStats| -> rewind::Result<()> {
        tokens += s.real_tokens;
        secs += s.seconds;
        peak = peak.max(s.peak_saved_bytes);
        bar.set_message(format!(
            "loss {:.4}  {:.0} tok/s  peak saved {} (run)",
            s.loss,
            tokens as f64 / secs.max(1e-9),
            fmt_mib(peak)
        ));
        bar.inc(1);
        if let (Some(p), Some(n)) = (&args.save, args.save_every)
            && t.steps_done().is_multiple_of(n)
        {
            t.save(p)?;
        }
        Ok(())
    };
    let result = train::run(&mut trainer, args.model.steps, &mut after_step);
    bar.finish();
    if let (Err(e), true) = (&result, ranks > 1) {
        // Ending this process ends the job: the launcher stops the other ranks.
        eprintln!("error (rank {} of {ranks}): {e:#}", trainer.rank());
        std::process::exit(1);
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            for w in rewind::warnings::take() {
                eprintln!("warning: {w}");
            }
            if let Some(fix) = train::suggest_fix(&cfg, &e) {
                eprintln!("error: {e:#}\n{fix}");
                std::process::exit(1);
            }
            return Err(e);
        }
    };
    let (state_per_rank, rss_per_rank) = match ranks {
        1 => (Vec::new(), Vec::new()),
        _ => (
            trainer.optimizer_state_bytes_per_rank()?,
            trainer.each_rank(rewind_lab::alloc_counter::peak_rss_bytes().unwrap_or(0))?,
        ),
    };
    if !lead {
        // Under ZeRO-1 the final save gathers every rank's shard.
        if let (Some(p), true) = (&args.save, trainer.zero()) {
            trainer.save(p)?;
        }
        return Ok(Ended::Done);
    }
    // The summary first: a final save that fails (a disk filling up) still reports the run.
    let mut json = summary.to_json();
    if let Some(c) = trainer.comm_times() {
        // Rank 0's communication: all-reduce time, and the part the backward did not hide.
        let mut v: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| rewind::Error::invalid("train", format!("summary: {e}")))?;
        v["ranks"] = ranks.into();
        v["all_reduce_s"] = c.all_reduce_s.into();
        v["all_reduce_waited_s"] = c.waited_s.into();
        v["all_reduce_bytes"] = c.bytes.into();
        v["all_gather_s"] = c.all_gather_s.into();
        v["zero"] = args.zero.into();
        v["optimizer_state_bytes_per_rank"] = state_per_rank.into();
        v["peak_rss_bytes_per_rank"] = rss_per_rank.into();
        json = v.to_string();
    }
    println!("{json}");
    if let Some(p) = &args.json {
        rewind::atomic_file::write_atomic("train", p, json.as_bytes())?;
    }
    if let Some(p) = &args.save {
        trainer.save(p)?;
        eprintln!(
            "saved the run at step {} to {}",
            trainer.steps_done(),
            p.display()
        );
    }
    if let Some(dir) = &args.save_adapter {
        trainer.model.save_adapter(dir)?;
        let what = match args.prefix_tokens {
            Some(_) => "the P-tuning v2 prefix encoder",
            None => "the LoRA adapter (PEFT's format)",
        };
        eprintln!("wrote {what} to {}", dir.display());
    }
    if let Some(dir) = &args.merge {
        trainer.model.merge_and_save(dir)?;
        eprintln!(
            "wrote the merged model (transformers' format) to {}",
            dir.display()
        );
    }
    Ok(Ended::Done)
}

/// `--max-len` when it is not given (and the model has at least as many positions).
pub const DEFAULT_MAX_LEN: usize = 128;

/// `rewind compare` flags.
#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct CompareArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder for compare.csv and compare.svg.
    #[arg(long, default_value = "out/compare")]
    pub out: PathBuf,
    /// What the checkpointed rows keep (as `train --checkpoint-policy`).
    #[arg(long, default_value = "recompute-all")]
    pub checkpoint_policy: PolicyChoice,
}

/// Runs `rewind compare`: the table, the targets, CSV and SVG.
pub fn compare(args: &CompareArgs) -> rewind::Result<Ended> {
    use rewind_lab::train::compare as cmp;
    let base = TrainConfig {
        policy: args.checkpoint_policy.clone(),
        ..args.model.config()
    };
    let variants = cmp::variants(&base);
    println!(
        "rewind compare: {} blocks d={} heads={}, vocab {}, max_len {}, batch {}, {} steps each, seed {}; {} threads",
        base.layers,
        base.d,
        base.heads,
        base.vocab,
        base.max_len,
        base.batch_size,
        args.model.steps,
        base.seed,
        rewind::cpu::threads()
    );
    let bar = ProgressBar::new(variants.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .expect("static template is valid"),
    );
    let rows = cmp::compare(&base, args.model.steps, &mut |r| {
        bar.set_message(format!("{} done", r.name));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    print!("{}", cmp::table(&rows));
    println!("\ntargets:");
    let targets = cmp::targets(&rows);
    let steps = args.model.steps;
    for t in &targets {
        println!(
            "  {:<48} {:>7.3}  (target {} {:.2}) {}",
            t.what,
            t.measured,
            if t.at_least { "≥" } else { "≤" },
            t.threshold,
            t.verdict(steps)
        );
    }
    if targets.iter().any(|t| !t.judged(steps)) {
        println!(
            "  (a run of {steps} steps shows the memory and speed targets; the loss band needs --steps {})",
            cmp::LOSS_STEPS
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| io_err(&args.out, e))?;
    let (csv, svg) = (args.out.join("compare.csv"), args.out.join("compare.svg"));
    rewind::atomic_file::write_atomic("compare", &csv, cmp::csv(&rows).as_bytes())?;
    rewind::atomic_file::write_atomic("compare", &svg, cmp::chart(&rows)?.as_bytes())?;
    println!("wrote {} and {}", csv.display(), svg.display());
    Ok(if targets.iter().all(|t| !t.judged(steps) || t.met()) {
        Ended::Done
    } else {
        Ended::NotMet
    })
}
