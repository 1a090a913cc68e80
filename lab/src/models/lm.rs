//! The model a training run fine-tunes, behind one interface: the lab's small transformer, or
//! GPT-2 loaded from a transformers checkpoint directory (`train --model DIR`).

use super::{Gpt2, Transformer};
use crate::data::Batch;
use rewind::checkpoint::{BlockCosts, CheckpointMode, SavePolicy, Segmentation};
use rewind::error::Result;
use rewind::nn::{Embedding, Parameters};
use rewind::ops::loss::IGNORE_INDEX;
use rewind::tensor::Tensor;

/// A causal language model the trainer can run.
#[derive(Debug)]
pub enum LmModel {
    /// The lab's transformer (`model.*` names).
    Small(Transformer),
    /// GPT-2 (transformers' `transformer.*` names).
    Gpt2(Gpt2),
}

impl LmModel {
    /// Mean next-token cross-entropy of `batch` (labels −100 ignored), blocks under `seg`.
    pub fn loss(
        &self,
        batch: &Batch,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        match self {
            LmModel::Small(m) => m.loss_with(batch, seg, mode, policy),
            LmModel::Gpt2(m) => {
                let (b, t) = (batch.ids.shape()[0], batch.ids.shape()[1]);
                let mask = batch.key_pad_mask.reshape(&[b, t])?;
                m.logits_hidden(&batch.ids, Some(&mask), seg, mode, policy)?
                    .reshape(&[b * t, m.cfg.vocab_size])?
                    .cross_entropy(&batch.labels, IGNORE_INDEX)
            }
        }
    }

    /// Per-block saved bytes on `batch` (one probe forward that keeps nothing).
    pub fn block_costs(&self, batch: &Batch) -> Result<BlockCosts> {
        match self {
            LmModel::Small(m) => m.block_costs(batch),
            LmModel::Gpt2(m) => {
                let (b, t) = (batch.ids.shape()[0], batch.ids.shape()[1]);
                let mask = batch.key_pad_mask.reshape(&[b, t])?;
                rewind::tape::scratch(|| {
                    m.embed(&batch.ids, Some(&mask))
                        .and_then(|(h, modules)| BlockCosts::measure(&modules, &h))
                })
            }
        }
    }

    /// The token embedding (for `enable_input_require_grads`).
    pub fn token_embedding(&self) -> &Embedding {
        match self {
            LmModel::Small(m) => &m.tok,
            LmModel::Gpt2(m) => &m.wte,
        }
    }

    /// Name prefixes of the embedding tables.
    pub fn embedding_prefixes(&self) -> &'static [&'static str] {
        match self {
            LmModel::Small(_) => &["model.embed_"],
            LmModel::Gpt2(_) => &["transformer.wte.", "transformer.wpe."],
        }
    }

    /// Name prefix of block `i`'s parameters.
    pub fn block_prefix(&self, i: usize) -> String {
        match self {
            LmModel::Small(_) => format!("model.layers.{i}."),
            LmModel::Gpt2(_) => format!("transformer.h.{i}."),
        }
    }
}

impl Parameters for LmModel {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        match self {
            LmModel::Small(m) => m.named_parameters(),
            LmModel::Gpt2(m) => m.named_parameters(),
        }
    }
}
