//! Every flag of every subcommand, checked before any work starts: counts in range, floats
//! finite and in range, inputs readable, outputs writable, and the memory a run of this size
//! needs against the machine's. A failed check is a usage error (exit 2) naming the flag.

use crate::cli_train::{CompareArgs, ModelArgs, TrainArgs};
use crate::{
    BenchArgs, BenchCoreArgs, BenchDistArgs, EvalArgs, GenerateArgs, MemoryArgs, ReproArgs,
};
use rewind_lab::models::lm::Checkpoint;
use rewind_lab::models::transformer::TENSOR_NAMES as TRANSFORMER_NAMES;
use rewind_lab::train::{PlanChoice, PolicyChoice};
use std::fmt;
use std::path::Path;

/// A flag with a value that cannot run; the message names the flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Checked = Result<(), Usage>;

fn usage(flag: &str, value: impl fmt::Display, msg: impl fmt::Display) -> Usage {
    Usage(format!("--{flag} {value}: {msg}"))
}

/// `lo ≤ v ≤ hi`; `why` says where the bound comes from.
fn count(flag: &str, v: usize, lo: usize, hi: usize, why: &str) -> Checked {
    if v < lo {
        return Err(usage(flag, v, format!("must be at least {lo} ({why})")));
    }
    if v > hi {
        return Err(usage(flag, v, format!("must be at most {hi} ({why})")));
    }
    Ok(())
}

fn positive(flag: &str, v: f64) -> Checked {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(usage(flag, v, "must be a finite number greater than 0"))
    }
}

fn non_negative(flag: &str, v: f64) -> Checked {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(usage(flag, v, "must be a finite number, 0 or more"))
    }
}

fn readable_file(flag: &str, p: &Path) -> Checked {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => std::fs::File::open(p)
            .map(|_| ())
            .map_err(|e| usage(flag, p.display(), format!("cannot be read: {e}"))),
        Ok(_) => Err(usage(flag, p.display(), "is not a file")),
        Err(e) => Err(usage(flag, p.display(), format!("cannot be read: {e}"))),
    }
}

/// The folder that will hold `p` accepts a new file (probed with one, then removed); a
/// device such as `/dev/null` is written in place and accepted as it is.
fn writable_file(flag: &str, p: &Path) -> Checked {
    if let Ok(m) = std::fs::metadata(p) {
        if m.is_dir() {
            return Err(usage(flag, p.display(), "is a folder, not a file"));
        }
        if m.is_file() {
            // Saves replace it by renaming a new file onto it, which an immutable or
            // append-only file refuses: found now, not after the work. (Opening it for
            // writing, without truncating, changes nothing; only EPERM, the flags' answer,
            // counts: permission bits do not stop a rename.)
            const EPERM: i32 = 1;
            if let Err(e) = std::fs::OpenOptions::new().write(true).open(p)
                && e.raw_os_error() == Some(EPERM)
            {
                return Err(usage(flag, p.display(), format!("cannot be replaced: {e}")));
            }
        } else {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map(|_| ())
                .map_err(|e| usage(flag, p.display(), format!("cannot be written: {e}")));
        }
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    probe_dir(flag, p, dir)
}

/// `p` is (or can be made) a folder that accepts new files.
fn writable_dir(flag: &str, p: &Path) -> Checked {
    std::fs::create_dir_all(p)
        .map_err(|e| usage(flag, p.display(), format!("cannot be created: {e}")))?;
    probe_dir(flag, p, p)
}

fn probe_dir(flag: &str, shown: &Path, dir: &Path) -> Checked {
    let probe = dir.join(format!(".rewind-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(usage(
            flag,
            shown.display(),
            format!("cannot be written ({}: {e})", dir.display()),
        )),
    }
}

/// This machine's memory (`MemTotal` in `/proc/meminfo`), or 16 GiB where it cannot be read.
pub fn memory_limit() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(16.0 * (1u64 << 30) as f64, |kib| kib * 1024.0)
}

/// `bytes` in binary units, `"7.3 PiB"`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    if bytes >= 1024f64.powi(9) {
        return format!("{bytes:.1e} B");
    }
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A size flag's name, the value given (as a number, and as given) and its default.
struct Size {
    flag: &'static str,
    given: f64,
    shown: String,
    default: f64,
}

impl Size {
    fn new(flag: &'static str, given: usize, default: usize) -> Size {
        Size {
            flag,
            given: given as f64,
            shown: given.to_string(),
            default: default as f64,
        }
    }
}

/// Refuses a run whose estimate exceeds the machine's memory, naming the size flag whose
/// given value costs the most (the one that, put back at its default, shrinks the estimate most).
fn fits(sizes: &[Size], what: &str, estimate: impl Fn(&[f64]) -> f64) -> Checked {
    let given: Vec<f64> = sizes.iter().map(|s| s.given).collect();
    let need = estimate(&given);
    let limit = memory_limit();
    if need <= limit {
        return Ok(());
    }
    let culprit = (0..sizes.len())
        .min_by(|&a, &b| {
            let at_default = |i: usize| {
                let mut v = given.clone();
                v[i] = sizes[i].default;
                estimate(&v)
            };
            at_default(a).total_cmp(&at_default(b))
        })
        .map_or(&sizes[0], |i| &sizes[i]);
    Err(usage(
        culprit.flag,
        &culprit.shown,
        format!(
            "a run of this size needs ≈ {} ({what}), more than this machine's {} of memory",
            human_bytes(need),
            human_bytes(limit)
        ),
    ))
}

const REPS: usize = 1000;
const REPS_WHY: &str = "timed repetitions per measurement";

/// `rewind train` and `rewind compare`'s shared flags.
fn model(m: &ModelArgs) -> Checked {
    count(
        "steps",
        m.steps.try_into().unwrap_or(usize::MAX),
        1,
        10_000_000,
        "one run's step records; resume from a --save to go further",
    )?;
    count("d", m.d, 1, usize::MAX, "the model's width")?;
    count(
        "heads",
        m.heads,
        1,
        m.d,
        "each head needs one or more of --d's columns",
    )?;
    if !m.d.is_multiple_of(m.heads) {
        return Err(usage("heads", m.heads, format!("must divide --d {}", m.d)));
    }
    count("layers", m.layers, 1, usize::MAX, "the model needs a block")?;
    count(
        "max-len",
        m.max_len(),
        2,
        usize::MAX,
        "a sample needs an input and a next token",
    )?;
    count(
        "vocab",
        m.vocab,
        257,
        1 << 16,
        "256 byte ids and <|endoftext|>, at most 65536 ids",
    )?;
    count(
        "samples",
        m.samples,
        2,
        usize::MAX,
        "one sample to train on and one held out",
    )?;
    count(
        "batch-size",
        m.batch_size,
        1,
        usize::MAX,
        "samples per micro-batch",
    )?;
    positive("lr", m.lr)?;
    if let Some(p) = &m.text_file {
        readable_file("text-file", p)?;
    }
    Ok(())
}

/// Bytes a transformer run of these sizes holds: parameters, gradients and two AdamW moments
/// (16 bytes a parameter), the stored activations of one micro-batch (attention scores
/// included), the logits and the corpus.
fn train_bytes(v: &[f64], lora_rank: f64, samples_matter: bool) -> f64 {
    let [d, layers, max_len, vocab, samples, batch, heads] =
        [v[0], v[1], v[2], v[3], v[4], v[5], v[6]];
    let per_block = 12.0 * d * d + 13.0 * d + 4.0 * lora_rank * d;
    let params = 2.0 * vocab * d + max_len * d + layers * per_block + 2.0 * d;
    let tokens = batch * max_len;
    let activations = 4.0 * tokens * (layers * (16.0 * d + 2.0 * heads * max_len) + 3.0 * vocab);
    let corpus = if samples_matter {
        samples * 2048.0
    } else {
        0.0
    };
    16.0 * params + activations + corpus
}

fn model_fits(m: &ModelArgs, lora_rank: usize) -> Checked {
    let d = ModelArgs::defaults();
    let size = Size::new;
    let sizes = [
        size("d", m.d, d.d),
        size("layers", m.layers, d.layers),
        size("max-len", m.max_len(), d.max_len()),
        size("vocab", m.vocab, d.vocab),
        size("samples", m.samples, d.samples),
        size("batch-size", m.batch_size, d.batch_size),
        size("heads", m.heads, d.heads),
    ];
    let synthetic = m.text_file.is_none();
    fits(
        &sizes,
        "parameters, gradients, AdamW state, activations and corpus",
        |v| train_bytes(v, lora_rank as f64, synthetic),
    )
}

/// `--model DIR` holds a checkpoint of a family rewind loads: config.json, its weights (one
/// file or a sharded index) and tokenizer.json (or SentencePiece's tokenizer.model); its
/// family and sizes.
fn checkpoint(dir: &Path) -> Result<Checkpoint, Usage> {
    let missing = |f: &str| usage("model", dir.display(), format!("has no readable {f}"));
    readable_file("model", &dir.join("config.json")).map_err(|_| missing("config.json"))?;
    if readable_file("model", &dir.join("tokenizer.json")).is_err() {
        readable_file("model", &dir.join("tokenizer.model"))
            .map_err(|_| missing("tokenizer.json (or tokenizer.model)"))?;
    }
    if readable_file("model", &dir.join("model.safetensors")).is_err()
        && readable_file("model", &dir.join("model.safetensors.index.json")).is_err()
    {
        let pickled = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
            .iter()
            .any(|f| dir.join(f).exists());
        return Err(if pickled {
            usage(
                "model",
                dir.display(),
                "holds pickled PyTorch weights (pytorch_model*.bin), which rewind does not read; save the model with safe_serialization=True",
            )
        } else {
            missing("model.safetensors (or model.safetensors.index.json)")
        });
    }
    Checkpoint::open(dir).map_err(|e| usage("model", dir.display(), e))
}

/// `--model DIR`: a checkpoint of a family the trainer loads; its sizes in place of the flags',
/// its names for `save-names:`, `--max-len` at most its positions (by default the smaller of
/// 128 and its positions).
fn model_dir(a: &TrainArgs) -> Result<Option<(ModelArgs, Checkpoint)>, Usage> {
    let Some(dir) = &a.model_dir else {
        return Ok(None);
    };
    let ckpt = checkpoint(dir)?;
    let c = ckpt.sizes;
    let max_len = match a.model.max_len {
        Some(given) if given > c.positions => {
            return Err(usage(
                "max-len",
                given,
                format!("the model at --model has {} positions", c.positions),
            ));
        }
        Some(given) => given,
        None => crate::cli_train::DEFAULT_MAX_LEN.min(c.positions),
    };
    Ok(Some((
        ModelArgs {
            d: c.d,
            heads: c.heads,
            layers: c.layers,
            vocab: c.vocab,
            max_len: Some(max_len),
            ..a.model.clone()
        },
        ckpt,
    )))
}

/// `rewind train`; `--model`'s checkpoint, opened once, for the run.
pub fn train(a: &TrainArgs) -> Result<Option<Checkpoint>, Usage> {
    let from_dir = model_dir(a)?;
    let sized = from_dir.as_ref().map_or(&a.model, |(m, _)| m);
    let names: &[&str] = from_dir
        .as_ref()
        .map_or(&TRANSFORMER_NAMES[..], |(_, c)| c.family.tensor_names);
    if from_dir.is_none() {
        model(&a.model)?;
    } else {
        count(
            "steps",
            a.model.steps.try_into().unwrap_or(usize::MAX),
            1,
            10_000_000,
            "one run's step records; resume from a --save to go further",
        )?;
        count(
            "max-len",
            sized.max_len(),
            2,
            usize::MAX,
            "a sample needs an input and a next token",
        )?;
        count(
            "samples",
            a.model.samples,
            2,
            usize::MAX,
            "one sample to train on and one held out",
        )?;
        count(
            "batch-size",
            a.model.batch_size,
            1,
            usize::MAX,
            "samples per micro-batch",
        )?;
        positive("lr", a.model.lr)?;
        if let Some(p) = &a.model.text_file {
            readable_file("text-file", p)?;
        }
    }
    if let Some(p) = &a.data_file {
        readable_file("data", p)?;
    }
    non_negative("weight-decay", a.weight_decay)?;
    if let Some(m) = a.max_grad_norm {
        positive("max-grad-norm", m)?;
    }
    count(
        "accumulation",
        a.accumulation,
        1,
        1024,
        "micro-batches per optimizer step",
    )?;
    count(
        "lora-rank",
        a.lora_rank,
        0,
        sized.d,
        "a rank above the model's width adds nothing",
    )?;
    if a.freeze.lower_blocks > sized.layers {
        return Err(usage(
            "freeze",
            a.freeze,
            format!("the model has {} blocks", sized.layers),
        ));
    }
    if let Some(n) = a.hf_activation_checkpointing {
        count(
            "hf-activation-checkpointing",
            n,
            1,
            usize::MAX,
            "transformers' every_n_layers",
        )?;
    }
    if a.checkpoint_policy != PolicyChoice::RecomputeAll {
        known_names(&a.checkpoint_policy, names)?;
        if a.checkpoint == PlanChoice::None && a.hf_activation_checkpointing.is_none() {
            return Err(usage(
                "checkpoint-policy",
                &a.checkpoint_policy,
                "applies to checkpointed segments: pass --checkpoint every, sqrt or budget:<bytes>",
            ));
        }
        if a.checkpoint_mode == rewind::checkpoint::CheckpointMode::Reentrant {
            return Err(usage(
                "checkpoint-policy",
                &a.checkpoint_policy,
                format!(
                    "needs --checkpoint-mode non-reentrant (PyTorch: \"{}\")",
                    rewind::checkpoint::POLICY_NEEDS_NON_REENTRANT_MSG
                ),
            ));
        }
    }
    if let Some(n) = a.save_every {
        count(
            "save-every",
            n.try_into().unwrap_or(usize::MAX),
            1,
            usize::MAX,
            "steps between saves",
        )?;
        if a.save.is_none() {
            return Err(usage("save-every", n, "needs --save, the file to write"));
        }
    }
    for (flag, mib) in [
        ("bucket-mb", a.bucket_mb),
        ("first-bucket-mb", a.first_bucket_mb),
    ] {
        if !(mib.is_finite() && mib > 0.0 && mib <= 65536.0) {
            return Err(usage(
                flag,
                mib,
                "MiB of a gradient bucket: more than 0, at most 65536",
            ));
        }
    }
    if let Some(p) = &a.resume {
        readable_file("resume", p)?;
    }
    if let Some(p) = &a.save {
        writable_file("save", p)?;
    }
    if let Some(p) = &a.json {
        writable_file("json", p)?;
    }
    let targets = from_dir
        .as_ref()
        .map_or(&rewind_lab::models::gpt2::LORA_TARGETS[..], |(_, c)| {
            c.family.lora_targets
        });
    let given = a.lora_targets.as_deref().unwrap_or_default();
    if a.lora_targets.is_some() && given.is_empty() {
        return Err(usage("lora-targets", "", "needs at least one projection"));
    }
    if let Some(t) = given.iter().find(|t| !targets.contains(&t.as_str())) {
        return Err(usage(
            "lora-targets",
            t,
            format!(
                "is not one of the model's projections ({})",
                targets.join(", ")
            ),
        ));
    }
    if let Some(alpha) = a.lora_alpha {
        positive("lora-alpha", alpha)?;
    }
    if !(0.0..1.0).contains(&a.lora_dropout) {
        return Err(usage("lora-dropout", a.lora_dropout, "must be in [0, 1)"));
    }
    if let Some(n) = a.prefix_tokens {
        let family = from_dir.as_ref().map(|(_, c)| c.family.model_type);
        if !matches!(family, Some("chatglm" | "glm")) {
            return Err(usage(
                "prefix-tokens",
                n,
                "P-tuning v2 is ChatGLM's: needs a --model of model_type chatglm or glm",
            ));
        }
        count("prefix-tokens", n, 1, 1 << 16, "prefix positions")?;
        let checkpointed =
            a.checkpoint != PlanChoice::None || a.hf_activation_checkpointing.is_some();
        if checkpointed && a.checkpoint_mode == rewind::checkpoint::CheckpointMode::Reentrant {
            return Err(usage(
                "prefix-tokens",
                n,
                format!(
                    "cannot train under --checkpoint-mode reentrant: the prefix reaches each layer inside a tuple, which a reentrant checkpoint does not count, so PyTorch fails (\"{}\"), and with enable_input_require_grads the second layer meets the prefix graph the first freed (\"{}\"); use --checkpoint-mode non-reentrant (rewind repro --model DIR shows both)",
                    rewind::error::NO_GRAD_FN_MSG,
                    rewind::error::GRAPH_FREED_MSG
                ),
            ));
        }
    }
    let adapter_outputs = [("save-adapter", &a.save_adapter), ("merge", &a.merge)];
    for (flag, dir) in adapter_outputs {
        if let Some(d) = dir
            && a.lora_rank == 0
            && (flag == "merge" || a.prefix_tokens.is_none())
        {
            let needs = match flag {
                "merge" => "needs --lora-rank 1 or more",
                _ => "needs --lora-rank 1 or more, or --prefix-tokens",
            };
            return Err(usage(flag, d.display(), needs));
        }
    }
    model_fits(sized, a.lora_rank)?;
    // Outputs last: a folder is made only when every value is right.
    for (flag, dir) in adapter_outputs {
        if let Some(d) = dir {
            writable_dir(flag, d)?;
        }
    }
    Ok(from_dir.map(|(_, c)| c))
}

/// A `save-names:` policy names only tensors the transformer names.
fn known_names(p: &PolicyChoice, known: &[&str]) -> Checked {
    if let PolicyChoice::SaveNames(names) = p
        && let Some(n) = names.iter().find(|n| !known.contains(&n.as_str()))
    {
        return Err(usage(
            "checkpoint-policy",
            p,
            format!(
                "the model names no tensor `{n}`; it names {}",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `rewind compare` (the largest variant is the baseline: fp32 AdamW, everything stored).
pub fn compare(a: &CompareArgs) -> Checked {
    model(&a.model)?;
    known_names(&a.checkpoint_policy, &TRANSFORMER_NAMES)?;
    model_fits(&a.model, 0)?;
    writable_dir("out", &a.out)
}

/// Bytes of a residual MLP step: `depth` blocks d → hidden → d over `rows` rows; parameters
/// with gradients and `state_floats` optimizer floats each, and each block's stored
/// activations (input, norm, hidden pre- and post-activation, output).
fn mlp_bytes(depth: f64, d: f64, hidden: f64, rows: f64, state_floats: f64) -> f64 {
    let params = depth * (2.0 * d * hidden + 3.0 * d + hidden);
    let activations = depth * rows * (3.0 * d + 3.0 * hidden);
    4.0 * (params * (2.0 + state_floats) + activations + 4.0 * rows * d)
}

/// `rewind repro`.
pub fn repro(a: &ReproArgs) -> Result<Option<Checkpoint>, Usage> {
    count("reps", a.reps, 1, REPS, REPS_WHY)?;
    if let Some(dir) = &a.model {
        // A checkpoint too big, or without its weights, is told on a tiny model of its
        // architecture: only config.json is needed.
        readable_file("model", &dir.join("config.json"))
            .map_err(|_| usage("model", dir.display(), "has no readable config.json"))?;
        return Checkpoint::open(dir)
            .map(Some)
            .map_err(|e| usage("model", dir.display(), e));
    }
    count(
        "blocks",
        a.blocks,
        2,
        usize::MAX,
        "the silent-variant scene leaves the last block unchecked and needs one before it",
    )?;
    let o = rewind_lab::repro::ReproOptions::default();
    let sizes = [Size::new("blocks", a.blocks, o.model.blocks)];
    fits(&sizes, "parameters, gradients and activations", |v| {
        // Two models' gradients are compared bit for bit: count the step twice.
        2.0 * mlp_bytes(
            v[0],
            o.model.d as f64,
            o.model.hidden as f64,
            o.rows as f64,
            0.0,
        )
    })?;
    Ok(None)
}

/// `rewind bench`.
pub fn bench(a: &BenchArgs) -> Checked {
    count("reps", a.reps, 1, REPS, REPS_WHY)?;
    if a.depths.is_empty() {
        return Err(usage("depths", "", "needs at least one depth"));
    }
    for &depth in &a.depths {
        count("depths", depth, 1, usize::MAX, "each depth needs a block")?;
    }
    count("rows", a.rows, 1, usize::MAX, "rows of the batch")?;
    let deepest = a.depths.iter().copied().max().unwrap_or(1);
    let cfg = rewind_lab::bench::checkpoint::SweepConfig::default();
    let sizes = [
        Size::new("depths", deepest, 64),
        Size::new("rows", a.rows, cfg.rows),
    ];
    fits(
        &sizes,
        "the deepest stack's parameters, SGD state and activations",
        |v| mlp_bytes(v[0], cfg.d as f64, cfg.hidden as f64, v[1], 1.0),
    )?;
    if let Some(p) = &a.from_csv {
        readable_file("from-csv", p)?;
    }
    if !a.cuda {
        writable_dir("out", &a.out)?;
    }
    Ok(())
}

/// `rewind memory`.
pub fn memory(a: &MemoryArgs) -> Result<Option<Checkpoint>, Usage> {
    count("reps", a.reps, 1, REPS, REPS_WHY)?;
    if let Some(dir) = &a.model {
        // config.json alone: the weights need not be there.
        readable_file("model", &dir.join("config.json"))
            .map_err(|_| usage("model", dir.display(), "has no readable config.json"))?;
        let ckpt = Checkpoint::open(dir).map_err(|e| usage("model", dir.display(), e))?;
        rewind_lab::memory_model::Arch::from_checkpoint(&ckpt)
            .map_err(|e| usage("model", dir.display(), e))?;
        count("batch-size", a.batch_size, 1, 1 << 20, "samples per step")?;
        count(
            "max-len",
            a.max_len,
            2,
            ckpt.sizes.positions,
            "within the model's positions",
        )?;
        count(
            "lora-rank",
            a.lora_rank,
            1,
            ckpt.sizes.d,
            "a rank above the width adds nothing",
        )?;
        count(
            "prefix-tokens",
            a.prefix_tokens,
            1,
            1 << 16,
            "prefix positions",
        )?;
        count("ranks", a.ranks, 1, 1 << 16, "processes in the job")?;
        return Ok(Some(ckpt));
    }
    count("depth", a.depth, 1, usize::MAX, "the model needs a block")?;
    count("width", a.width, 1, usize::MAX, "the model's width")?;
    count("rows", a.rows, 1, usize::MAX, "rows of the batch")?;
    let sizes = [
        Size::new("depth", a.depth, 8),
        Size::new("width", a.width, 512),
        Size::new("rows", a.rows, 512),
    ];
    fits(
        &sizes,
        "parameters, gradients, AdamW state and activations",
        |v| mlp_bytes(v[0], v[1], 4.0 * v[1], v[2], 2.0),
    )?;
    Ok(None)
}

/// `--adapter DIR`: a PEFT LoRA adapter, or a P-tuning v2 prefix encoder rewind saved.
fn adapter_dir(dir: &Path) -> Checked {
    let files = match dir.join("prefix_config.json").exists() {
        true => ["prefix_config.json", "prefix_encoder.safetensors"],
        false => ["adapter_config.json", "adapter_model.safetensors"],
    };
    for f in files {
        readable_file("adapter", &dir.join(f))
            .map_err(|_| usage("adapter", dir.display(), format!("has no readable {f}")))?;
    }
    Ok(())
}

/// `rewind generate`: the checkpoint and adapter readable, sampling settings in range, the
/// model's parameters within memory.
pub fn generate(a: &GenerateArgs) -> Result<Checkpoint, Usage> {
    let ckpt = checkpoint(&a.model)?;
    if let Some(dir) = &a.adapter {
        adapter_dir(dir)?;
    }
    count(
        "max-new-tokens",
        a.max_new_tokens,
        1,
        ckpt.sizes.positions,
        "tokens to add, within the model's positions",
    )?;
    if let Some(t) = a.temperature {
        positive("temperature", t)?;
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        return Err(usage("top-p", a.top_p, "must be in (0, 1]"));
    }
    let (d, v) = (ckpt.sizes.d as f64, ckpt.sizes.vocab as f64);
    let params = 4.0 * (2.0 * v * d + ckpt.sizes.layers as f64 * 12.0 * d * d);
    fits(&[], "the model's parameters", |_| params)?;
    Ok(ckpt)
}

/// `rewind eval`: the checkpoint, the text, the adapter's files, `--max-len` within the model's
/// positions, and the memory one batch's forward needs.
/// Returns the checkpoint, opened once, for the run.
pub fn eval(a: &EvalArgs) -> Result<Checkpoint, Usage> {
    let ckpt = checkpoint(&a.model)?;
    let c = ckpt.sizes;
    readable_file("text-file", &a.text_file)?;
    if let Some(dir) = &a.adapter {
        adapter_dir(dir)?;
    }
    count(
        "batch-size",
        a.batch_size,
        1,
        usize::MAX,
        "samples per forward",
    )?;
    let default = rewind_lab::eval::DEFAULT_MAX_LEN.min(c.positions);
    let max_len = a.max_len.unwrap_or(default);
    count(
        "max-len",
        max_len,
        2,
        c.positions,
        "a sample needs an input and a next token, within the model's positions",
    )?;
    // f32 parameters, then per token of a batch: logits with their softmax and a layer's
    // activations (nothing is kept across layers without grad).
    let (d, v) = (c.d as f64, c.vocab as f64);
    let params = 4.0 * (2.0 * v * d + c.layers as f64 * 12.0 * d * d);
    fits(
        &[
            Size::new("batch-size", a.batch_size, 4),
            Size::new("max-len", max_len, default),
        ],
        "parameters, one batch's activations and logits",
        |s| params + s[0] * s[1] * 4.0 * (3.0 * v + 32.0 * d + c.heads as f64 * s[1]),
    )?;
    Ok(ckpt)
}

/// `rewind bench-core`.
pub fn bench_dist(a: &BenchDistArgs) -> Checked {
    count("reps", a.reps, 1, REPS, REPS_WHY)?;
    count("depth", a.depth, 1, usize::MAX, "the model needs a block")?;
    count("rows", a.rows, 1, usize::MAX, "rows of the step")?;
    if !(a.bucket_mb.is_finite() && a.bucket_mb > 0.0 && a.bucket_mb <= 65536.0) {
        return Err(usage(
            "bucket-mb",
            a.bucket_mb,
            "MiB of a gradient bucket: more than 0, at most 65536",
        ));
    }
    let cfg = rewind_lab::bench::core::MlpConfig::default();
    let sizes = [
        Size::new("depth", a.depth, cfg.depth),
        Size::new("rows", a.rows, cfg.rows),
    ];
    fits(&sizes, "parameters, SGD state and activations", |v| {
        mlp_bytes(v[0], cfg.d as f64, cfg.hidden as f64, v[1], 1.0)
    })
}

pub fn bench_core(a: &BenchCoreArgs) -> Checked {
    count("reps", a.reps, 1, REPS, REPS_WHY)?;
    count("depth", a.depth, 1, usize::MAX, "the model needs a block")?;
    let cfg = rewind_lab::bench::core::MlpConfig::default();
    let sizes = [Size::new("depth", a.depth, cfg.depth)];
    fits(&sizes, "parameters, SGD state and activations", |v| {
        mlp_bytes(v[0], cfg.d as f64, cfg.hidden as f64, cfg.rows as f64, 1.0)
    })?;
    if let Some(p) = &a.json {
        writable_file("json", p)?;
    }
    Ok(())
}
