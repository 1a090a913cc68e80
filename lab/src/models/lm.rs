//! The model a training run fine-tunes, behind one interface: the lab's small transformer, or a
//! transformers checkpoint directory (`train --model DIR`) of a family listed in
//! [`FAMILIES`]. Adding a family is its own file implementing [`CausalLm`] plus one line there.

use super::{Gpt2, Transformer};
use crate::data::Batch;
use rewind::checkpoint::{BlockCosts, CheckpointMode, SavePolicy, Segmentation};
use rewind::error::{Error, Result};
use rewind::indices::Indices;
use rewind::nn::attention::KvCache;
use rewind::nn::{Embedding, Parameters};
use rewind::ops::loss::IGNORE_INDEX;
use rewind::tensor::Tensor;
use std::path::{Path, PathBuf};

/// A causal language model the trainer can run.
pub trait CausalLm: Parameters + std::fmt::Debug {
    /// Logits `[B, T, vocab]` of `batch` (padded keys hidden), blocks under `seg`.
    fn logits(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor>;
    /// Mean next-token cross-entropy of `batch` (labels −100 ignored), blocks under `seg`.
    fn loss(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let (b, t) = (batch.ids.shape()[0], batch.ids.shape()[1]);
        self.logits(batch, seg, mode, policy)?
            .reshape(&[b * t, self.vocab_size()])?
            .cross_entropy(&batch.labels, IGNORE_INDEX)
    }
    /// Logits `[B, n, vocab]` of the next `n` tokens `ids` `[B, n]` after the positions
    /// `cache` holds (one [`KvCache`] per block, empty at the start), which then holds them too:
    /// decoding a token at a time without recomputing the prefix.
    fn decode(&self, _ids: &Indices, _cache: &mut Vec<KvCache>) -> Result<Tensor> {
        Err(Error::invalid("generate", "this model does not decode"))
    }
    /// Per-block saved bytes on `batch` (one probe forward that keeps nothing).
    fn block_costs(&self, batch: &Batch) -> Result<BlockCosts>;
    /// The token embedding (for `enable_input_require_grads`).
    fn token_embedding(&self) -> &Embedding;
    /// Name prefixes of the embedding tables.
    fn embedding_prefixes(&self) -> &'static [&'static str];
    /// Name prefix of block `i`'s parameters.
    fn block_prefix(&self, i: usize) -> String;
    /// Token ids the embedding holds.
    fn vocab_size(&self) -> usize;
    /// Positions its position table or rotary range allows.
    fn max_positions(&self) -> usize;
    /// Its blocks (the length of a [`Segmentation`] over them).
    fn layers(&self) -> usize;
    /// ChatGLM's P-tuning v2: a prefix encoder of `tokens` positions (through a projection
    /// MLP when `projection`), everything else frozen.
    fn add_prefix(&mut self, _tokens: usize, _projection: bool) -> Result<()> {
        Err(Error::invalid(
            "prefix",
            "P-tuning v2 is ChatGLM's (model_type chatglm or glm)",
        ))
    }
    /// PEFT's `lora_dropout` on the LoRA adapters (active in training mode).
    fn set_lora_dropout(&mut self, _p: f64) -> Result<()> {
        Err(Error::invalid(
            "lora-dropout",
            "this model has no PEFT LoRA adapters",
        ))
    }
    /// Training mode (dropout on) or eval mode, as PyTorch's `model.train()` / `model.eval()`.
    fn train(&self, _on: bool) {}
    /// Adds the PEFT LoRA adapter in `dir` (everything else frozen).
    fn load_adapter(&mut self, _dir: &Path) -> Result<()> {
        Err(Error::invalid(
            "adapter",
            "this model has no PEFT adapter format",
        ))
    }
    /// Writes the LoRA adapter in PEFT's format.
    fn save_adapter(&self, _dir: &Path) -> Result<()> {
        Err(Error::invalid(
            "save_adapter",
            "this model has no PEFT adapter format",
        ))
    }
    /// Merges the LoRA adapters into the base weights and writes the model as transformers'
    /// `save_pretrained` does.
    fn merge_and_save(&mut self, _dir: &Path) -> Result<()> {
        Err(Error::invalid(
            "merge",
            "this model has no transformers format",
        ))
    }
}

/// Positions `past..past + n` for the next `n` tokens of `ids` `[B, n]` (shape `[n]`), `past`
/// counting the cached positions but the first `skip` (a P-tuning prefix); `cache` made one per
/// block when empty.
pub fn next_positions(
    ids: &Indices,
    cache: &mut Vec<KvCache>,
    blocks: usize,
    skip: usize,
) -> Result<Indices> {
    if ids.shape().len() != 2 || ids.shape()[1] == 0 {
        return Err(Error::invalid(
            "decode",
            format!("needs ids [B, n ≥ 1], got {:?}", ids.shape()),
        ));
    }
    if cache.is_empty() {
        cache.resize(blocks, KvCache::new());
    }
    if cache.len() != blocks {
        return Err(Error::invalid(
            "decode",
            format!("{} caches for {blocks} blocks", cache.len()),
        ));
    }
    let (past, n) = (cache[0].len().saturating_sub(skip), ids.shape()[1]);
    Indices::new((past as i64..(past + n) as i64).collect(), &[n])
}

/// The sizes of a checkpoint, from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Width.
    pub d: usize,
    /// Query heads.
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// Token ids.
    pub vocab: usize,
    /// Positions.
    pub positions: usize,
}

/// Builds a tiny random model from a parsed `config.json`, LoRA of (rank, alpha) on targets.
pub type TinyBuilder = fn(&serde_json::Value, usize, f64, &[&str]) -> Result<Box<dyn CausalLm>>;

/// Loads a checkpoint with LoRA of (rank, alpha) on the target modules.
pub type Loader = fn(&Checkpoint, usize, f64, &[&str]) -> Result<Box<dyn CausalLm>>;

/// What a family declares about itself, known from its `config.json`'s `model_type` before
/// anything is loaded (the command line checks flags against it).
#[derive(Debug)]
pub struct Family {
    /// transformers' `model_type`.
    pub model_type: &'static str,
    /// The names its blocks give tensors, for `save-names:` policies.
    pub tensor_names: &'static [&'static str],
    /// PEFT's target modules it supports.
    pub lora_targets: &'static [&'static str],
    /// PEFT's default target modules for it.
    pub default_lora_targets: &'static [&'static str],
    /// Reads its sizes from the parsed `config.json`.
    pub sizes: fn(&serde_json::Value) -> Result<Sizes>,
    /// Loads a checkpoint, LoRA of (rank, alpha) on `targets` added when rank > 0.
    pub load: Loader,
    /// A random model of the config's architecture at a tiny size (2 layers, width 64, 4
    /// heads, 512 ids: [`tiny_config`]), LoRA of (rank, alpha) on `targets` when rank > 0:
    /// the failure story for a checkpoint too big for the machine.
    pub tiny: TinyBuilder,
}

/// `config` with its size keys replaced: `layers`, `hidden`, `ffn`, `heads`, `kv_heads`,
/// `head_dim`, `vocab`, `positions` name the family's keys for them (`""` where it has none).
/// Key/value heads become 1, 2 or 4 as the original shares them (multi-query, grouped, none).
pub fn tiny_config(config: &serde_json::Value, keys: [&str; 8]) -> serde_json::Value {
    let [
        layers,
        hidden,
        ffn,
        heads,
        kv_heads,
        head_dim,
        vocab,
        positions,
    ] = keys;
    let mut v = config.clone();
    let (h, kv) = (v[heads].as_u64().unwrap_or(1), v[kv_heads].as_u64());
    let tiny_kv = match kv {
        Some(1) => 1,
        Some(k) if k < h => 2,
        _ => 4,
    };
    for (key, value) in [
        (layers, 2),
        (hidden, 64),
        (ffn, 128),
        (heads, 4),
        (kv_heads, tiny_kv),
        (head_dim, 16),
        (vocab, 512),
        (positions, 128),
    ] {
        if !key.is_empty() && (key != kv_heads || kv.is_some()) {
            v[key] = value.into();
        }
    }
    v
}

/// Every family `train --model` loads.
pub static FAMILIES: &[Family] = &[
    super::gpt2::FAMILY,
    super::llama::LLAMA,
    super::llama::QWEN2,
    super::glm::CHATGLM,
    super::glm::GLM,
];

/// A checkpoint directory with its `config.json` read and parsed once: its family (by
/// `model_type`) and sizes, known before anything is loaded.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory, canonical where it can be.
    pub dir: PathBuf,
    /// `config.json`, parsed.
    pub config: serde_json::Value,
    /// Its family.
    pub family: &'static Family,
    /// Its sizes.
    pub sizes: Sizes,
}

impl PartialEq for Checkpoint {
    fn eq(&self, other: &Checkpoint) -> bool {
        self.dir == other.dir && self.config == other.config
    }
}

impl Checkpoint {
    /// Reads `dir/config.json`: an error names a missing file, bad JSON, no `model_type`, a
    /// family rewind does not load, or sizes its family rejects.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("load", &path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid("model", format!("{}: {e}", path.display())))?;
        let model_type = config["model_type"].as_str().ok_or_else(|| {
            Error::invalid("model", format!("{} has no model_type", path.display()))
        })?;
        let family = family(model_type)?;
        let sizes = (family.sizes)(&config)?;
        Ok(Checkpoint {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            config,
            family,
            sizes,
        })
    }

    /// The model, LoRA of (rank, alpha) on `targets` when rank > 0 (everything else frozen).
    pub fn load(&self, rank: usize, alpha: f64, targets: &[&str]) -> Result<Box<dyn CausalLm>> {
        (self.family.load)(self, rank, alpha, targets)
    }
}

/// The family of `model_type`, or an error naming the ones there are.
pub fn family(model_type: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.model_type == model_type)
        .ok_or_else(|| {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.model_type).collect();
            Error::invalid(
                "model",
                format!(
                    "config.json's model_type \"{model_type}\" is not one rewind loads ({})",
                    known.join(", ")
                ),
            )
        })
}

impl CausalLm for Transformer {
    fn logits(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        Transformer::logits(self, batch, seg, mode, policy)
    }
    fn block_costs(&self, batch: &Batch) -> Result<BlockCosts> {
        Transformer::block_costs(self, batch)
    }
    fn token_embedding(&self) -> &Embedding {
        &self.tok
    }
    fn embedding_prefixes(&self) -> &'static [&'static str] {
        &["model.embed_"]
    }
    fn block_prefix(&self, i: usize) -> String {
        format!("model.layers.{i}.")
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab
    }
    fn max_positions(&self) -> usize {
        self.cfg.max_len
    }
    fn layers(&self) -> usize {
        self.cfg.layers
    }
}

impl CausalLm for Gpt2 {
    fn logits(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let mask = batch.key_mask()?;
        self.logits_hidden(&batch.ids, Some(&mask), seg, mode, policy)
    }
    fn block_costs(&self, batch: &Batch) -> Result<BlockCosts> {
        let mask = batch.key_mask()?;
        rewind::tape::scratch(|| {
            self.embed(&batch.ids, Some(&mask))
                .and_then(|(h, modules)| BlockCosts::measure(&modules, &h))
        })
    }
    fn decode(&self, ids: &Indices, cache: &mut Vec<KvCache>) -> Result<Tensor> {
        Gpt2::decode(self, ids, cache)
    }
    fn token_embedding(&self) -> &Embedding {
        &self.wte
    }
    fn embedding_prefixes(&self) -> &'static [&'static str] {
        &["transformer.wte.", "transformer.wpe."]
    }
    fn block_prefix(&self, i: usize) -> String {
        format!("transformer.h.{i}.")
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.cfg.n_positions
    }
    fn layers(&self) -> usize {
        self.blocks.len()
    }
    fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        Gpt2::load_adapter(self, dir)
    }
    fn set_lora_dropout(&mut self, p: f64) -> Result<()> {
        Gpt2::set_lora_dropout(self, p)
    }
    fn train(&self, on: bool) {
        Gpt2::train(self, on)
    }
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        Gpt2::save_adapter(self, dir)
    }
    fn merge_and_save(&mut self, dir: &Path) -> Result<()> {
        self.merge_lora()?;
        self.save_pretrained(dir)
    }
}
