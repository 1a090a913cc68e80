//! The shape of the real failure: a frozen embedding → N pre-norm residual MLP blocks with
//! trainable weights (or frozen weights carrying trainable LoRA adapters) → frozen LM head →
//! cross-entropy. Only the blocks train, as in LoRA fine-tuning. The checkpointing story (`rewind repro`, `tests/checkpoint.rs`) runs on it.

use rewind::checkpoint::{CheckpointMode, Segmentation, run_blocks};
use rewind::error::Result;
use rewind::indices::Indices;
use rewind::nn::{Embedding, LayerNorm, Linear, Module, Parameters, Projection, prefixed};
use rewind::tensor::Tensor;
use std::rc::Rc;

/// Sizes and variants of the model.
#[derive(Debug, Clone, Copy)]
pub struct ReproConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Width.
    pub d: usize,
    /// Hidden width of each block's MLP.
    pub hidden: usize,
    /// Number of blocks.
    pub blocks: usize,
    /// LoRA rank (0: plain trainable linear layers).
    pub lora_rank: usize,
    /// Dropout probability inside each block.
    pub dropout: f64,
}

impl Default for ReproConfig {
    fn default() -> Self {
        ReproConfig {
            vocab: 64,
            d: 32,
            hidden: 64,
            blocks: 4,
            lora_rank: 0,
            dropout: 0.0,
        }
    }
}

/// x ↦ x + fc2(dropout(gelu(fc1(ln(x))))).
#[derive(Debug)]
pub struct ReproBlock {
    ln: LayerNorm,
    fc1: Projection,
    fc2: Projection,
    dropout: f64,
}

impl Parameters for ReproBlock {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("ln", self.ln.named_parameters());
        p.extend(prefixed("fc1", self.fc1.module().named_parameters()));
        p.extend(prefixed("fc2", self.fc2.module().named_parameters()));
        p
    }
}

impl Module for ReproBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .fc1
            .module()
            .forward(&self.ln.forward(x)?)?
            .gelu()?
            .dropout(self.dropout, true)?;
        self.fc2.module().forward(&h)?.add(x)
    }
}

/// Frozen embedding → blocks → head.
#[derive(Debug)]
pub struct ReproModel {
    /// The input embeddings, frozen (as in LoRA fine-tuning).
    pub embedding: Embedding,
    /// The blocks.
    pub blocks: Vec<Rc<ReproBlock>>,
    /// The LM head, frozen.
    pub head: Linear,
}

impl ReproModel {
    /// A model drawn from the engine generator, with the embedding and head frozen.
    pub fn new(cfg: ReproConfig) -> Result<ReproModel> {
        let embedding = Embedding::new(cfg.vocab, cfg.d)?;
        embedding.weight.requires_grad_(false)?;
        let blocks = (0..cfg.blocks)
            .map(|_| {
                Ok(Rc::new(ReproBlock {
                    ln: LayerNorm::new(cfg.d)?,
                    fc1: Projection::new(cfg.d, cfg.hidden, cfg.lora_rank)?,
                    fc2: Projection::new(cfg.hidden, cfg.d, cfg.lora_rank)?,
                    dropout: cfg.dropout,
                }))
            })
            .collect::<Result<_>>()?;
        let head = Linear::new(cfg.d, cfg.vocab, true)?;
        for p in head.parameters() {
            p.requires_grad_(false)?;
        }
        Ok(ReproModel {
            embedding,
            blocks,
            head,
        })
    }

    /// The blocks as modules.
    pub fn modules(&self) -> Vec<Rc<dyn Module>> {
        self.blocks
            .iter()
            .map(|b| b.clone() as Rc<dyn Module>)
            .collect()
    }

    /// Mean cross-entropy of predicting `targets` from `ids`, the blocks run under `seg`.
    pub fn loss(
        &self,
        ids: &Indices,
        targets: &Indices,
        seg: &Segmentation,
        mode: CheckpointMode,
    ) -> Result<Tensor> {
        let h = self.embedding.forward(ids)?;
        let h = run_blocks(&self.modules(), &h, seg, mode, "blocks")?;
        self.head
            .forward(&h)?
            .cross_entropy(targets, rewind::ops::loss::IGNORE_INDEX)
    }
}

impl Parameters for ReproModel {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("embed_tokens", self.embedding.named_parameters());
        for (i, b) in self.blocks.iter().enumerate() {
            p.extend(prefixed(&format!("blocks.{i}"), b.named_parameters()));
        }
        p.extend(prefixed("lm_head", self.head.named_parameters()));
        p
    }
}
