//! A small decoder-only transformer: token + position embeddings, pre-norm blocks of causal
//! self-attention (hiding padded keys) and a GELU MLP, a final layer norm and an LM head.
//! With `lora_rank > 0` the base weights are frozen and the attention query/value projections
//! carry trainable LoRA adapters — the fine-tuning setting where the checkpointing failure
//! occurs. Blocks run under a checkpoint plan like the other models.

use crate::data::Batch;
use rewind::checkpoint::{
    BlockCosts, CheckpointMode, SavePolicy, Segmentation, checkpoint_name, run_blocks_with_policy,
};
use rewind::error::{Error, Result};
use rewind::nn::{Embedding, LayerNorm, Linear, Module, Parameters, Projection, prefixed};
use rewind::ops::loss::IGNORE_INDEX;
use rewind::tensor::Tensor;
use std::rc::Rc;

/// The tensors each block names for [`SavePolicy::SaveNames`].
pub const TENSOR_NAMES: [&str; 7] = [
    "q",
    "k",
    "v",
    "attn_probs",
    "attn_context",
    "mlp_hidden",
    "mlp_act",
];

/// Sizes of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence (position embeddings).
    pub max_len: usize,
    /// Width.
    pub d: usize,
    /// Attention heads (must divide `d`).
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// LoRA rank on q and v (0: every weight trainable).
    pub lora_rank: usize,
}

/// One pre-norm block: x + attn(ln1(x)), then + mlp(ln2(·)).
#[derive(Debug)]
pub struct TransformerBlock {
    ln1: LayerNorm,
    q: Projection,
    k: Projection,
    v: Projection,
    o: Projection,
    ln2: LayerNorm,
    fc1: Projection,
    fc2: Projection,
    heads: usize,
}

impl TransformerBlock {
    fn new(cfg: &TransformerConfig) -> Result<TransformerBlock> {
        let (d, r) = (cfg.d, cfg.lora_rank);
        // LoRA goes on q and v; everything else is frozen (or all trainable without LoRA).
        let frozen = |p: Projection| -> Result<Projection> {
            if r > 0 {
                for t in p.module().parameters() {
                    t.requires_grad_(false)?;
                }
            }
            Ok(p)
        };
        let norm = || -> Result<LayerNorm> {
            let ln = LayerNorm::new(d)?;
            if r > 0 {
                for t in ln.parameters() {
                    t.requires_grad_(false)?;
                }
            }
            Ok(ln)
        };
        Ok(TransformerBlock {
            ln1: norm()?,
            q: Projection::new(d, d, r)?,
            k: frozen(Projection::new(d, d, 0)?)?,
            v: Projection::new(d, d, r)?,
            o: frozen(Projection::new(d, d, 0)?)?,
            ln2: norm()?,
            fc1: frozen(Projection::new(d, 4 * d, 0)?)?,
            fc2: frozen(Projection::new(4 * d, d, 0)?)?,
            heads: cfg.heads,
        })
    }

    /// `[B, T, d]` → `[B, H, T, d/H]`.
    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        x.reshape(&[b, t, self.heads, d / self.heads])?
            .permute(&[0, 2, 1, 3])
    }

    fn attention(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let (q, k, v) = (
            self.split(&checkpoint_name(&self.q.module().forward(x)?, "q"))?,
            self.split(&checkpoint_name(&self.k.module().forward(x)?, "k"))?,
            self.split(&checkpoint_name(&self.v.module().forward(x)?, "v"))?,
        );
        let ctx = super::causal_attention(&q, &k, &v, key_mask)?;
        self.o
            .module()
            .forward(&checkpoint_name(&ctx, "attn_context"))
    }
}

impl Parameters for TransformerBlock {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("ln1", self.ln1.named_parameters());
        for (name, proj) in [
            ("attn.q_proj", &self.q),
            ("attn.k_proj", &self.k),
            ("attn.v_proj", &self.v),
            ("attn.o_proj", &self.o),
            ("mlp.fc1", &self.fc1),
            ("mlp.fc2", &self.fc2),
        ] {
            p.extend(prefixed(name, proj.module().named_parameters()));
        }
        p.extend(prefixed("ln2", self.ln2.named_parameters()));
        p
    }
}

impl TransformerBlock {
    /// The block with padded keys hidden by `key_mask` (`[B, 1, 1, T]`, 1.0 = hidden).
    pub fn forward_masked(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = x.add(&self.attention(&self.ln1.forward(x)?, key_mask)?)?;
        let hidden = checkpoint_name(
            &self.fc1.module().forward(&self.ln2.forward(&h)?)?,
            "mlp_hidden",
        );
        let act = checkpoint_name(&hidden.gelu()?, "mlp_act");
        h.add(&self.fc2.module().forward(&act)?)
    }
}

impl Module for TransformerBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
}

/// A block bound to one batch's key mask, so a checkpoint segment recomputing it in backward
/// hides the same keys.
struct Masked {
    block: Rc<TransformerBlock>,
    mask: Tensor,
}

impl Parameters for Masked {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.block.named_parameters()
    }
}

impl Module for Masked {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block.forward_masked(x, Some(&self.mask))
    }
}

/// The model.
#[derive(Debug)]
pub struct Transformer {
    /// Sizes.
    pub cfg: TransformerConfig,
    /// Token embeddings (frozen under LoRA).
    pub tok: Embedding,
    /// Position embeddings (frozen under LoRA).
    pub pos: Embedding,
    /// The blocks.
    pub blocks: Vec<Rc<TransformerBlock>>,
    /// Final norm.
    pub ln_f: LayerNorm,
    /// LM head (frozen under LoRA).
    pub head: Linear,
}

impl Transformer {
    /// A model drawn from the engine generator.
    pub fn new(cfg: TransformerConfig) -> Result<Transformer> {
        if cfg.heads == 0 || !cfg.d.is_multiple_of(cfg.heads) {
            return Err(Error::invalid(
                "Transformer",
                format!("{} heads do not divide width {}", cfg.heads, cfg.d),
            ));
        }
        let m = Transformer {
            cfg,
            tok: Embedding::new(cfg.vocab, cfg.d)?,
            pos: Embedding::new(cfg.max_len, cfg.d)?,
            blocks: (0..cfg.layers)
                .map(|_| TransformerBlock::new(&cfg).map(Rc::new))
                .collect::<Result<_>>()?,
            ln_f: LayerNorm::new(cfg.d)?,
            head: Linear::new(cfg.d, cfg.vocab, false)?,
        };
        if cfg.lora_rank > 0 {
            for p in m
                .tok
                .parameters()
                .into_iter()
                .chain(m.pos.parameters())
                .chain(m.head.parameters())
                .chain(m.ln_f.parameters())
            {
                p.requires_grad_(false)?;
            }
        }
        Ok(m)
    }

    /// The embedded batch and the blocks bound to its key mask: what the block chain runs on.
    fn embed(&self, batch: &Batch) -> Result<(Tensor, Vec<Rc<dyn Module>>)> {
        let (b, t) = (batch.ids.shape()[0], batch.ids.shape()[1]);
        if t > self.cfg.max_len {
            return Err(Error::IndexOutOfRange {
                op: "Transformer",
                index: t as i64,
                size: self.cfg.max_len,
            });
        }
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
        let positions = rewind::indices::Indices::new(positions, &[b, t])?;
        let h = self
            .tok
            .forward(&batch.ids)?
            .add(&self.pos.forward(&positions)?)?;
        let mask = batch.key_pad_mask.reshape(&[b, 1, 1, t])?;
        let modules = self
            .blocks
            .iter()
            .map(|blk| {
                Rc::new(Masked {
                    block: blk.clone(),
                    mask: mask.clone(),
                }) as Rc<dyn Module>
            })
            .collect();
        Ok((h, modules))
    }

    /// Mean next-token cross-entropy of `batch` (labels −100 ignored), blocks under `seg`.
    pub fn loss(&self, batch: &Batch, seg: &Segmentation, mode: CheckpointMode) -> Result<Tensor> {
        self.loss_with(batch, seg, mode, &SavePolicy::RecomputeAll)
    }

    /// [`Self::loss`] with a selective policy for the checkpointed segments. The blocks name
    /// what a [`SavePolicy::SaveNames`] can keep: `q`, `k`, `v` (projections), `attn_probs`
    /// (softmax), `attn_context` (before the output projection), `mlp_hidden` (fc1's
    /// output), `mlp_act` (after GELU).
    pub fn loss_with(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let (b, t) = (batch.ids.shape()[0], batch.ids.shape()[1]);
        self.logits(batch, seg, mode, policy)?
            .reshape(&[b * t, self.cfg.vocab])?
            .cross_entropy(&batch.labels, IGNORE_INDEX)
    }

    /// Logits `[B, T, vocab]` of `batch`, blocks under `seg`/`mode`/`policy`.
    pub fn logits(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let (h, modules) = self.embed(batch)?;
        let h = run_blocks_with_policy(&modules, &h, seg, mode, "model.layers", policy)?;
        self.head.forward(&self.ln_f.forward(&h)?)
    }

    /// Per-block saved bytes and boundary sizes on `batch` (one probe forward that keeps
    /// nothing), for the memory-budget planner.
    pub fn block_costs(&self, batch: &Batch) -> Result<BlockCosts> {
        rewind::tape::scratch(|| {
            self.embed(batch)
                .and_then(|(h, modules)| BlockCosts::measure(&modules, &h))
        })
    }
}

impl Parameters for Transformer {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("model.embed_tokens", self.tok.named_parameters());
        p.extend(prefixed(
            "model.embed_positions",
            self.pos.named_parameters(),
        ));
        for (i, b) in self.blocks.iter().enumerate() {
            p.extend(prefixed(&format!("model.layers.{i}"), b.named_parameters()));
        }
        p.extend(prefixed("model.norm", self.ln_f.named_parameters()));
        p.extend(prefixed("lm_head", self.head.named_parameters()));
        p
    }
}
