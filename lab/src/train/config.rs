//! What a training run does: model size, data, checkpoint plan and mode, precision,
//! optimizer, accumulation, freezing and padding. Every choice parses from the words the CLI
//! uses (`FromStr`), so `rewind train --help`, saves and summaries share one vocabulary.

use crate::data::CorpusConfig;
use rewind::checkpoint::{CheckpointMode, SavePolicy};
use rewind::error::{Error, Result};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Which blocks are checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanChoice {
    /// Store every activation.
    None,
    /// Every block is a segment (HF's `gradient_checkpointing_enable`).
    Every,
    /// √L segments, the last stored (`checkpoint_sequential`).
    Sqrt,
    /// Every n-th block checkpointed, the others stored (transformers' `every_n_layers`).
    EveryNth(usize),
    /// Least recomputation within this many bytes of saved activations, from block costs
    /// measured on a full-length batch (so every batch fits).
    Budget(usize),
}

/// What a checkpointed segment keeps (selective checkpointing); non-reentrant mode only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PolicyChoice {
    /// Keep nothing, recompute the whole segment.
    #[default]
    RecomputeAll,
    /// Keep matmul and linear outputs (JAX's `dots_saveable`).
    SaveMatmuls,
    /// Keep the outputs the model names so (JAX's `save_only_these_names`).
    SaveNames(Vec<String>),
}

impl PolicyChoice {
    /// The engine's policy.
    pub fn policy(&self) -> SavePolicy {
        match self {
            PolicyChoice::RecomputeAll => SavePolicy::RecomputeAll,
            PolicyChoice::SaveMatmuls => SavePolicy::SaveMatmuls,
            PolicyChoice::SaveNames(n) => SavePolicy::SaveNames(n.clone()),
        }
    }
}

impl FromStr for PolicyChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "recompute-all" => Ok(PolicyChoice::RecomputeAll),
            "save-matmuls" => Ok(PolicyChoice::SaveMatmuls),
            _ => match s.strip_prefix("save-names:") {
                Some(list) if !list.is_empty() && list.split(',').all(|n| !n.is_empty()) => Ok(
                    PolicyChoice::SaveNames(list.split(',').map(str::to_string).collect()),
                ),
                _ => Err(bad(
                    "checkpoint policy",
                    s,
                    "recompute-all, save-matmuls or save-names:NAME[,NAME…]",
                )),
            },
        }
    }
}

impl fmt::Display for PolicyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyChoice::RecomputeAll => write!(f, "recompute-all"),
            PolicyChoice::SaveMatmuls => write!(f, "save-matmuls"),
            PolicyChoice::SaveNames(n) => write!(f, "save-names:{}", n.join(",")),
        }
    }
}

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimChoice {
    /// SGD with momentum 0.9.
    Sgd,
    /// AdamW, fp32 state.
    AdamW,
    /// AdamW with blockwise 8-bit state.
    AdamW8bit,
}

/// Mixed precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AmpChoice {
    /// f32 throughout.
    #[default]
    Off,
    /// fp16 autocast (PyTorch's CUDA lists) with dynamic loss scaling.
    Fp16,
    /// bf16 autocast (PyTorch's CPU lists), no loss scaling: bf16 has f32's exponent range.
    Bf16,
}

impl AmpChoice {
    /// The autocast dtype, if any.
    pub fn dtype(self) -> Option<rewind::DType> {
        match self {
            AmpChoice::Off => None,
            AmpChoice::Fp16 => Some(rewind::DType::F16),
            AmpChoice::Bf16 => Some(rewind::DType::BF16),
        }
    }

    /// As a save's setting: `false` and `true` (fp16) as before bf16 existed, so older saves
    /// still resume; `"bf16"`.
    fn setting(self) -> Value {
        match self {
            AmpChoice::Off => false.into(),
            AmpChoice::Fp16 => true.into(),
            AmpChoice::Bf16 => "bf16".into(),
        }
    }
}

/// How batches are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingChoice {
    /// Every batch padded to the model's `max_len`.
    Fixed,
    /// Each batch padded to its longest sample.
    Dynamic,
    /// Length-grouped batches (sorted within chunks of 8 batches, then shuffled), padded dynamically.
    Grouped,
}

/// Which parameters are frozen besides what LoRA freezes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FreezeChoice {
    /// Token and position embeddings.
    pub embeddings: bool,
    /// The first this many blocks.
    pub lower_blocks: usize,
}

/// One training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Width.
    pub d: usize,
    /// Attention heads.
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// Longest sequence; longer samples are truncated (for every padding strategy alike).
    pub max_len: usize,
    /// LoRA rank on q/v (0: full fine-tuning).
    pub lora_rank: usize,
    /// LoRA's α (`None`: 2 × rank).
    pub lora_alpha: Option<f64>,
    /// PEFT's `lora_dropout` (0: none).
    pub lora_dropout: f64,
    /// ChatGLM's P-tuning v2 prefix positions (0: off).
    pub prefix_tokens: usize,
    /// The prefix through ChatGLM's projection MLP.
    pub prefix_projection: bool,
    /// With `model`: the projections that get LoRA (PEFT's `target_modules`).
    pub lora_targets: Vec<String>,
    /// Byte-level BPE vocabulary size (the 256 bytes, `<|endoftext|>`, then merges).
    pub vocab: usize,
    /// The synthetic corpus.
    pub corpus: CorpusConfig,
    /// Train on this UTF-8 text file instead (one sample per paragraph: blocks of text
    /// separated by blank lines).
    pub text_file: Option<std::path::PathBuf>,
    /// Train on this JSON-lines conversation file instead (THUDM's finetune_demo format,
    /// rendered in the model's chat format, the loss on the assistant's turns).
    pub data_file: Option<std::path::PathBuf>,
    /// Fine-tune this transformers checkpoint (its directory holds `tokenizer.json` or `tokenizer.model`) instead
    /// of the lab's transformer; `d`, `heads`, `layers` and `vocab` then repeat its config.
    pub model: Option<crate::models::lm::Checkpoint>,
    /// Fraction of samples held out for the final evaluation loss.
    pub eval_fraction: f64,
    /// Checkpoint plan.
    pub plan: PlanChoice,
    /// Checkpoint mode.
    pub mode: CheckpointMode,
    /// What checkpointed segments keep.
    pub policy: PolicyChoice,
    /// HF's `enable_input_require_grads` on the token embedding.
    pub enable_input_require_grads: bool,
    /// Mixed precision: fp16 autocast with dynamic loss scaling, or bf16 autocast.
    pub amp: AmpChoice,
    /// Optimizer.
    pub optimizer: OptimChoice,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW).
    pub weight_decay: f64,
    /// Clip the gradients' total L2 norm to this before each step (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step (the loss of each is divided by this).
    pub accumulation: usize,
    /// Freezing.
    pub freeze: FreezeChoice,
    /// Padding.
    pub padding: PaddingChoice,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Seed of the model, data order and generator.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            d: 64,
            heads: 4,
            layers: 8,
            max_len: 128,
            lora_rank: 0,
            lora_alpha: None,
            lora_dropout: 0.0,
            prefix_tokens: 0,
            prefix_projection: false,
            lora_targets: vec!["c_attn".to_string()],
            vocab: 512,
            corpus: CorpusConfig {
                samples: 2000,
                seed: 0,
                max_statements: 48,
                alpha: 1.5,
            },
            text_file: None,
            data_file: None,
            model: None,
            eval_fraction: 0.1,
            plan: PlanChoice::None,
            mode: CheckpointMode::NonReentrant,
            policy: PolicyChoice::RecomputeAll,
            enable_input_require_grads: false,
            amp: AmpChoice::Off,
            optimizer: OptimChoice::AdamW,
            lr: 3e-3,
            weight_decay: 0.0,
            max_grad_norm: None,
            accumulation: 1,
            freeze: FreezeChoice::default(),
            padding: PaddingChoice::Fixed,
            batch_size: 8,
            seed: 0,
        }
    }
}

fn bad(what: &str, got: &str, expected: &str) -> Error {
    Error::invalid(
        "train",
        format!("unknown {what} `{got}`: expected {expected}"),
    )
}

impl FromStr for PlanChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => PlanChoice::None,
            "every" => PlanChoice::Every,
            "sqrt" => PlanChoice::Sqrt,
            _ if s.starts_with("every-nth:") => match s["every-nth:".len()..].parse() {
                Ok(n) if n > 0 => PlanChoice::EveryNth(n),
                _ => {
                    return Err(bad("checkpoint plan", s, "every-nth:N with N ≥ 1"));
                }
            },
            _ => match s.strip_prefix("budget:").map(parse_bytes) {
                Some(Some(b)) => PlanChoice::Budget(b),
                _ => {
                    return Err(bad(
                        "checkpoint plan",
                        s,
                        "none, every, sqrt, every-nth:N or budget:<bytes> (e.g. budget:4MiB)",
                    ));
                }
            },
        })
    }
}

/// `123`, `64KiB`, `4MiB`, `1GiB`.
fn parse_bytes(s: &str) -> Option<usize> {
    let (num, mult) = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as usize)
}

impl fmt::Display for PlanChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanChoice::None => write!(f, "none"),
            PlanChoice::Every => write!(f, "every"),
            PlanChoice::Sqrt => write!(f, "sqrt"),
            PlanChoice::EveryNth(n) => write!(f, "every-nth:{n}"),
            PlanChoice::Budget(b) => write!(f, "budget:{b}B"),
        }
    }
}

impl FromStr for OptimChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimChoice::Sgd),
            "adamw" => Ok(OptimChoice::AdamW),
            "adamw8bit" => Ok(OptimChoice::AdamW8bit),
            _ => Err(bad("optimizer", s, "sgd, adamw or adamw8bit")),
        }
    }
}

impl fmt::Display for OptimChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimChoice::Sgd => "sgd",
            OptimChoice::AdamW => "adamw",
            OptimChoice::AdamW8bit => "adamw8bit",
        })
    }
}

impl FromStr for AmpChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp16" => Ok(AmpChoice::Fp16),
            "bf16" => Ok(AmpChoice::Bf16),
            _ => Err(bad("amp", s, "fp16 or bf16")),
        }
    }
}

impl FromStr for PaddingChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fixed" => Ok(PaddingChoice::Fixed),
            "dynamic" => Ok(PaddingChoice::Dynamic),
            "grouped" => Ok(PaddingChoice::Grouped),
            _ => Err(bad("padding", s, "fixed, dynamic or grouped")),
        }
    }
}

impl fmt::Display for PaddingChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PaddingChoice::Fixed => "fixed",
            PaddingChoice::Dynamic => "dynamic",
            PaddingChoice::Grouped => "grouped",
        })
    }
}

/// Parses a checkpoint mode: `reentrant` or `non-reentrant`.
pub fn parse_mode(s: &str) -> Result<CheckpointMode> {
    match s {
        "reentrant" => Ok(CheckpointMode::Reentrant),
        "non-reentrant" => Ok(CheckpointMode::NonReentrant),
        _ => Err(bad("checkpoint mode", s, "reentrant or non-reentrant")),
    }
}

/// The CLI word for a checkpoint mode.
pub fn mode_name(m: CheckpointMode) -> &'static str {
    match m {
        CheckpointMode::Reentrant => "reentrant",
        CheckpointMode::NonReentrant => "non-reentrant",
    }
}

impl FromStr for FreezeChoice {
    type Err = Error;
    /// `none`, `embeddings`, `lower:N`, or both joined by `+` (`embeddings+lower:4`).
    fn from_str(s: &str) -> Result<Self> {
        let mut f = FreezeChoice::default();
        for part in s.split('+') {
            match part {
                "none" => {}
                "embeddings" => f.embeddings = true,
                _ => match part.strip_prefix("lower:").map(str::parse) {
                    Some(Ok(n)) => f.lower_blocks = n,
                    _ => {
                        return Err(bad(
                            "freeze choice",
                            s,
                            "none, embeddings, lower:N or embeddings+lower:N",
                        ));
                    }
                },
            }
        }
        Ok(f)
    }
}

impl fmt::Display for FreezeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.embeddings, self.lower_blocks) {
            (false, 0) => write!(f, "none"),
            (true, 0) => write!(f, "embeddings"),
            (false, n) => write!(f, "lower:{n}"),
            (true, n) => write!(f, "embeddings+lower:{n}"),
        }
    }
}

impl TrainConfig {
    /// Every setting as (key, typed value), in a fixed order: what a save records and a
    /// resume checks, and the summary's `"config"`. Corpus settings are null when the run
    /// trains on a text file.
    pub fn settings(&self) -> Vec<(&'static str, Value)> {
        let c = &self.corpus;
        let synthetic = self.text_file.is_none() && self.data_file.is_none();
        let corpus = |v: Value| if synthetic { v } else { Value::Null };
        let mut v = vec![
            ("d", self.d.into()),
            ("heads", self.heads.into()),
            ("layers", self.layers.into()),
            ("max_len", self.max_len.into()),
            ("lora_rank", self.lora_rank.into()),
            (
                "lora_alpha",
                self.lora_alpha.map_or(Value::Null, Value::from),
            ),
            ("lora_dropout", self.lora_dropout.into()),
            ("prefix_tokens", self.prefix_tokens.into()),
            ("prefix_projection", self.prefix_projection.into()),
            (
                "lora_targets",
                if self.model.is_some() {
                    self.lora_targets.clone().into()
                } else {
                    Value::Null
                },
            ),
            ("vocab", self.vocab.into()),
            ("corpus_samples", corpus(c.samples.into())),
            ("corpus_seed", corpus(c.seed.into())),
            ("corpus_max_statements", corpus(c.max_statements.into())),
            ("corpus_alpha", corpus(c.alpha.into())),
            (
                "model",
                self.model
                    .as_ref()
                    .map_or(Value::Null, |c| c.dir.display().to_string().into()),
            ),
            (
                "text_file",
                self.text_file
                    .as_ref()
                    .map_or(Value::Null, |p| p.display().to_string().into()),
            ),
            (
                "data_file",
                self.data_file
                    .as_ref()
                    .map_or(Value::Null, |p| p.display().to_string().into()),
            ),
            ("eval_fraction", self.eval_fraction.into()),
            ("checkpoint", self.plan.to_string().into()),
            ("checkpoint_mode", mode_name(self.mode).into()),
            ("checkpoint_policy", self.policy.to_string().into()),
            (
                "enable_input_require_grads",
                self.enable_input_require_grads.into(),
            ),
            ("amp", self.amp.setting()),
            ("optimizer", self.optimizer.to_string().into()),
            ("lr", self.lr.into()),
            ("weight_decay", self.weight_decay.into()),
            ("accumulation", self.accumulation.into()),
            ("freeze", self.freeze.to_string().into()),
            ("padding", self.padding.to_string().into()),
            ("batch_size", self.batch_size.into()),
            ("seed", self.seed.into()),
        ];
        // Only when set: saves made before the setting existed still resume.
        if let Some(m) = self.max_grad_norm {
            v.push(("max_grad_norm", m.into()));
        }
        v
    }

    /// Rejects settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::invalid("train", msg));
        if self.heads == 0 || !self.d.is_multiple_of(self.heads) {
            return fail(format!(
                "{} heads do not divide width {}",
                self.heads, self.d
            ));
        }
        if let Some(m) = self.max_grad_norm
            && !(m.is_finite() && m > 0.0)
        {
            return fail(format!("max_grad_norm {m} must be finite and above 0"));
        }
        if self.layers == 0 || self.max_len < 2 || self.batch_size == 0 || self.accumulation == 0 {
            return fail("layers, batch size and accumulation must be ≥ 1, max_len ≥ 2".into());
        }
        if self.freeze.lower_blocks > self.layers {
            return fail(format!(
                "cannot freeze the lower {} of {} blocks",
                self.freeze.lower_blocks, self.layers
            ));
        }
        if self.vocab < 257 {
            return fail(format!(
                "vocabulary {} is below the 256 bytes plus <|endoftext|>",
                self.vocab
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(format!(
                "learning rate {} is not a positive number",
                self.lr
            ));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) || self.corpus.samples < 2 {
            return fail("eval fraction must be in [0, 1) and the corpus hold ≥ 2 samples".into());
        }
        Ok(())
    }
}
