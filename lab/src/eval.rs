//! `rewind eval`: a model's token-weighted mean next-token loss and its perplexity on a text
//! file, one sample per paragraph as `train` reads it — what a person runs before and after
//! fine-tuning. The loss is transformers' `model(ids, labels=ids).loss` summed over each
//! sample's predicted tokens and divided by their count.

use crate::data::{Padding, Tokenizer, batches, read_paragraphs};
use crate::models::CausalLm;
use crate::models::lm::Checkpoint;
use rewind::checkpoint::{CheckpointMode, SavePolicy, Segmentation};
use rewind::error::{Error, Result};
use rewind::ops::loss::IGNORE_INDEX;
use std::path::{Path, PathBuf};

/// Positions a sample keeps when `--max-len` is not given and the model allows more.
pub const DEFAULT_MAX_LEN: usize = 1024;

/// What `rewind eval` is asked.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// A transformers checkpoint (its directory holds model.safetensors and tokenizer.json or tokenizer.model).
    pub model: Checkpoint,
    /// UTF-8 text; paragraphs are separated by blank lines.
    pub text_file: PathBuf,
    /// Tokens kept per sample (default: the model's positions, at most [`DEFAULT_MAX_LEN`]).
    pub max_len: Option<usize>,
    /// Samples per forward.
    pub batch_size: usize,
    /// A PEFT LoRA adapter directory to apply.
    pub adapter: Option<PathBuf>,
}

/// What `rewind eval` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Token-weighted mean next-token cross-entropy (nats).
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Tokens predicted (each sample's length − 1).
    pub tokens: usize,
    /// Samples evaluated.
    pub samples: usize,
    /// Paragraphs left out for having fewer than 2 tokens.
    pub skipped: usize,
    /// Tokens kept per sample.
    pub max_len: usize,
}

impl EvalReport {
    /// The report as one JSON line.
    pub fn json(&self) -> String {
        serde_json::json!({
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tokens": self.tokens,
            "samples": self.samples,
            "skipped": self.skipped,
            "max_len": self.max_len,
        })
        .to_string()
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        format!(
            "  samples     {}\n  tokens      {}\n  max len     {}\n  loss        {:.6}\n  perplexity  {:.4}\n",
            self.samples, self.tokens, self.max_len, self.loss, self.perplexity
        )
    }
}

/// The checkpoint's model with the PEFT adapter in `adapter` applied, in eval mode.
pub fn load_model(ckpt: &Checkpoint, adapter: Option<&Path>) -> Result<Box<dyn CausalLm>> {
    let mut m = ckpt.load(0, 0.0, &[])?;
    if let Some(a) = adapter {
        m.load_adapter(a)?;
    }
    m.train(false);
    Ok(m)
}

/// Token-weighted mean next-token loss of `model` on `samples` (each ≥ 2 tokens), in batches
/// of `batch_size` padded as `padding` says, stored, without grad; returns (loss, tokens
/// predicted), the loss NaN when nothing is predicted.
pub fn mean_loss<S: crate::data::Tokens>(
    model: &dyn CausalLm,
    samples: &[S],
    batch_size: usize,
    padding: Padding,
) -> Result<(f64, usize)> {
    let _ng = rewind::tape::NoGradGuard::new();
    let seg = Segmentation::store_all(model.layers());
    let (mut sum, mut count) = (0.0f64, 0usize);
    for b in batches(samples, batch_size, padding, 0)? {
        let n = b
            .labels
            .data()
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .count();
        let loss = model.loss(
            &b,
            &seg,
            CheckpointMode::NonReentrant,
            &SavePolicy::RecomputeAll,
        )?;
        sum += loss.item()? * n as f64;
        count += n;
    }
    Ok((
        if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        },
        count,
    ))
}

/// Runs `rewind eval`: loads the model and its tokenizer, reads the text, evaluates.
pub fn run(opts: &EvalOptions) -> Result<EvalReport> {
    let model = load_model(&opts.model, opts.adapter.as_deref())?;
    let tokenizer = Tokenizer::from_dir(&opts.model.dir)?;
    if tokenizer.vocab_size() > model.vocab_size() {
        return Err(Error::invalid(
            "eval",
            format!(
                "the tokenizer has {} ids, the model {}",
                tokenizer.vocab_size(),
                model.vocab_size()
            ),
        ));
    }
    let positions = model.max_positions();
    let max_len = opts.max_len.unwrap_or(positions.min(DEFAULT_MAX_LEN));
    if max_len > positions {
        return Err(Error::invalid(
            "eval",
            format!("--max-len {max_len} exceeds the model's {positions} positions"),
        ));
    }
    let (texts, _) = read_paragraphs("eval", &opts.text_file)?;
    let mut samples = Vec::with_capacity(texts.len());
    for t in &texts {
        let mut ids = tokenizer.encode_with_special_tokens(t)?;
        ids.truncate(max_len);
        if ids.len() >= 2 {
            samples.push(ids);
        }
    }
    let skipped = texts.len() - samples.len();
    // Grouped by length: the least padding.
    let grouped = Padding::Grouped {
        chunk_batches: samples.len().max(1),
    };
    let (loss, tokens) = mean_loss(model.as_ref(), &samples, opts.batch_size, grouped)?;
    if tokens == 0 {
        return Err(Error::invalid("eval", "no paragraph has 2 or more tokens"));
    }
    Ok(EvalReport {
        loss,
        perplexity: loss.exp(),
        tokens,
        samples: samples.len(),
        skipped,
        max_len,
    })
}
