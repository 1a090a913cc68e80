//! ChatGLM3 (THUDM's `modeling_chatglm.py`, `model_type "chatglm"`) and GLM (transformers'
//! `GlmForCausalLM`, `model_type "glm"`): one network under two sets of names. RMSNorm,
//! grouped-query attention with q/k/v biases, RoPE on the first half of each head's dims in
//! interleaved pairs (the rest passed through), a SwiGLU MLP whose fused up-projection holds
//! rows `[gate | up]`, an untied head. ChatGLM3 fuses q, k and v into one `query_key_value`
//! (rows `[q | k | v]`, the module PEFT's LoRA targets); GLM keeps them apart.
//! Position ids are 0…T−1 in every row, as both write them; padded keys are hidden as
//! transformers hides them (ChatGLM3's own mask differs only on padded queries, which carry no
//! loss).

use super::glm_config::err;
pub use super::glm_config::{CHATGLM_TARGETS, GLM_TARGETS, GlmConfig, Naming};
use super::prefix::PrefixEncoder;
use crate::data::Batch;
use rewind::checkpoint::{
    BlockCosts, CheckpointMode, SavePolicy, Segmentation, run_blocks_with_policy,
};
use rewind::error::{Error, Result};
use rewind::indices::Indices;
use rewind::nn::attention::{KvCache, causal_attention};
use rewind::nn::{Embedding, Linear, Module, Parameters, Projection, prefixed};
use rewind::tensor::Tensor;
use std::path::Path;
use std::rc::Rc;

/// One layer: x + o(attn(rope(q), rope(k), v)) on input_layernorm(x), then
/// + down(silu(gate) · up) on post_attention_layernorm, `[gate | up]` from one projection.
#[derive(Debug)]
pub struct GlmBlock {
    input_layernorm: Tensor,
    /// In [`Naming::projections`] order: q, k, v apart or fused, then o, gate_up, down.
    projections: Vec<Projection>,
    post_attention_layernorm: Tensor,
    cfg: Rc<GlmConfig>,
}

impl GlmBlock {
    fn new(cfg: &Rc<GlmConfig>) -> Result<GlmBlock> {
        let (d, hd, i) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (q, kv) = (cfg.heads * hd, cfg.kv_heads * hd);
        let lin = |a, b, bias| Linear::new(a, b, bias).map(Projection::Plain);
        let ones = || Tensor::ones(&[d], rewind::DType::F32)?.requires_grad_(true);
        let mut projections = match cfg.naming {
            Naming::ChatGlm => vec![lin(d, q + 2 * kv, cfg.qkv_bias)?],
            Naming::Glm => vec![
                lin(d, q, cfg.qkv_bias)?,
                lin(d, kv, cfg.qkv_bias)?,
                lin(d, kv, cfg.qkv_bias)?,
            ],
        };
        projections.push(lin(q, d, false)?);
        projections.push(lin(d, 2 * i, false)?);
        projections.push(lin(i, d, false)?);
        Ok(GlmBlock {
            input_layernorm: ones()?,
            projections,
            post_attention_layernorm: ones()?,
            cfg: cfg.clone(),
        })
    }

    /// The layer with padded keys hidden by `key_mask` (`[B, 1, 1, T]`, 1.0 = hidden).
    pub fn forward_masked(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        positions: &Indices,
    ) -> Result<Tensor> {
        self.forward_with(x, key_mask, positions, None, None)
    }

    /// The layer over the whole sequence, after a P-tuning `prefix` of keys and values when
    /// given (`key_mask` then covers prefix and sequence), or (`cache`) over the next positions
    /// after those the cache holds.
    fn forward_with(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        positions: &Indices,
        cache: Option<&mut KvCache>,
        prefix: Option<&(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let p = |i: usize, h: &Tensor| self.projections[i].module().forward(h);
        let h = x.rms_norm(&self.input_layernorm, c.eps)?;
        let (nq, nkv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let (q, k, v) = match c.naming {
            Naming::ChatGlm => {
                let qkv = p(0, &h)?;
                (
                    qkv.narrow(2, 0, nq)?,
                    qkv.narrow(2, nq, nkv)?,
                    qkv.narrow(2, nq + nkv, nkv)?,
                )
            }
            Naming::Glm => (p(0, &h)?, p(1, &h)?, p(2, &h)?),
        };
        let heads = |t_: Tensor, n: usize| -> Result<Tensor> {
            t_.reshape(&[b, t, n, c.head_dim])?.permute(&[0, 2, 1, 3])
        };
        let q = heads(q, c.heads)?.rope(&c.rope, positions)?;
        let k = heads(k, c.kv_heads)?.rope(&c.rope, positions)?;
        let v = heads(v, c.kv_heads)?;
        let ctx = match (cache, prefix) {
            (Some(c), _) => c.attend(&q, &k, &v)?,
            (None, Some((pk, pv))) => {
                KvCache::from_kv(pk.clone(), pv.clone()).attend_masked(&q, &k, &v, key_mask)?
            }
            (None, None) => causal_attention(&q, &k, &v, key_mask)?,
        };
        let last = self.projections.len() - 1;
        let x = x.add(&p(last - 2, &ctx)?)?;
        let h = x.rms_norm(&self.post_attention_layernorm, c.eps)?;
        let gate_up = p(last - 1, &h)?;
        let gate = gate_up.narrow(2, 0, c.intermediate)?.silu()?;
        let up = gate_up.narrow(2, c.intermediate, c.intermediate)?;
        x.add(&p(last, &gate.mul(&up)?)?)
    }
}

impl Parameters for GlmBlock {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![(
            "input_layernorm.weight".to_string(),
            self.input_layernorm.clone(),
        )];
        let names = self.cfg.naming.projections();
        for (i, ((path, _), proj)) in names.iter().zip(&self.projections).enumerate() {
            if i == names.len() - 2 {
                // transformers' order: post_attention_layernorm before the MLP.
                p.push((
                    "post_attention_layernorm.weight".to_string(),
                    self.post_attention_layernorm.clone(),
                ));
            }
            super::peft::named(&mut p, path, proj);
        }
        p
    }
}

/// A layer bound to one batch's key mask, positions and P-tuning prefix, for checkpoint
/// segments (the prefix is captured, as ChatGLM3's layers get it inside a tuple).
struct Masked {
    block: Rc<GlmBlock>,
    mask: Option<Tensor>,
    positions: Indices,
    prefix: Option<(Tensor, Tensor)>,
}

impl Parameters for Masked {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.block.named_parameters()
    }
}

impl Module for Masked {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block.forward_with(
            x,
            self.mask.as_ref(),
            &self.positions,
            None,
            self.prefix.as_ref(),
        )
    }
}

/// ChatGLM3 or GLM.
#[derive(Debug)]
pub struct Glm {
    /// Sizes and choices.
    pub cfg: Rc<GlmConfig>,
    /// Token embeddings.
    pub embedding: Embedding,
    /// The layers.
    pub blocks: Vec<Rc<GlmBlock>>,
    /// Final norm's weight.
    pub final_norm: Tensor,
    /// The head `[vocab, hidden]` (untied).
    pub output_layer: Tensor,
    /// ChatGLM's P-tuning v2 prefix encoder, when added.
    pub prefix: Option<PrefixEncoder>,
}

impl Glm {
    /// A model of `cfg`'s sizes drawn from the engine generator.
    pub fn new(cfg: GlmConfig) -> Result<Glm> {
        let cfg = Rc::new(cfg);
        Ok(Glm {
            embedding: Embedding::new(cfg.vocab, cfg.hidden)?,
            blocks: (0..cfg.layers)
                .map(|_| GlmBlock::new(&cfg).map(Rc::new))
                .collect::<Result<_>>()?,
            final_norm: Tensor::ones(&[cfg.hidden], rewind::DType::F32)?.requires_grad_(true)?,
            output_layer: Linear::new(cfg.hidden, cfg.vocab, false)?
                .weight
                .requires_grad_(true)?,
            prefix: None,
            cfg,
        })
    }

    /// Loads `dir/config.json` and its weights (one file or shards; f32, f16 or bf16).
    pub fn load(dir: &Path) -> Result<Glm> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("glm", &path, e))?;
        let v = serde_json::from_str(&text).map_err(|e| err(format!("config.json: {e}")))?;
        Glm::load_with(GlmConfig::from_value(v)?, dir)
    }

    /// The model `cfg` describes with the weights in `dir`. A missing or mis-shaped tensor
    /// names its key; so does a tensor this network does not have (a P-tuning prefix
    /// encoder, glm4's extra norms), rather than being dropped unread.
    pub fn load_with(cfg: GlmConfig, dir: &Path) -> Result<Glm> {
        // Every parameter is replaced by the checkpoint's: no draws.
        let m = {
            let _skip = rewind::nn::SkipInit::new();
            Glm::new(cfg)?
        };
        let mut weights = super::hf::read_weights(dir)?;
        for (name, p) in m.named_parameters() {
            let (shape, values) = weights
                .remove(&name)
                .ok_or_else(|| err(format!("the checkpoint has no tensor `{name}`")))?;
            if shape.as_slice() != p.shape() {
                return Err(err(format!(
                    "`{name}` has shape {shape:?}, the config needs {:?}",
                    p.shape()
                )));
            }
            p.set_data(values)?;
        }
        let ignored = m.cfg.naming.ignored();
        if let Some(extra) = weights.keys().find(|k| !ignored.contains(&k.as_str())) {
            return Err(err(format!(
                "the checkpoint has a tensor `{extra}` that this {} network does not have",
                m.cfg.json["model_type"].as_str().unwrap_or("GLM")
            )));
        }
        Ok(m)
    }

    /// ChatGLM's P-tuning v2 (`pre_seq_len` = `tokens`): a random prefix encoder, every other
    /// parameter frozen.
    pub fn add_prefix(&mut self, tokens: usize, projection: bool) -> Result<()> {
        let c = &self.cfg;
        let enc = PrefixEncoder::new(
            tokens, projection, c.hidden, c.layers, c.kv_heads, c.head_dim,
        )?;
        self.set_prefix(enc)
    }

    /// Uses `enc` as the prefix encoder, every other parameter frozen.
    pub fn set_prefix(&mut self, enc: PrefixEncoder) -> Result<()> {
        if !self.lora_targets().is_empty() {
            return Err(err("P-tuning v2 and LoRA together are not supported"));
        }
        self.prefix = None;
        for (_, p) in self.named_parameters() {
            p.requires_grad_(false)?;
        }
        self.prefix = Some(enc);
        Ok(())
    }

    /// PEFT's `get_peft_model` with LoRA (rank `r`, scale α/r) on `targets`: every other
    /// parameter is frozen.
    pub fn add_lora_to(&mut self, r: usize, alpha: f64, targets: &[&str]) -> Result<()> {
        let known = self.cfg.naming.targets();
        if let Some(t) = targets.iter().find(|t| !known.contains(t)) {
            return Err(err(format!(
                "LoRA target `{t}` is not a {} projection ({})",
                self.cfg.json["model_type"].as_str().unwrap_or("GLM"),
                known.join(", ")
            )));
        }
        for (_, p) in self.named_parameters() {
            p.requires_grad_(false)?;
        }
        let names = self.cfg.naming.projections();
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| {
                err("add_lora: a layer is shared; add LoRA before using the model")
            })?;
            for ((_, name), proj) in names.iter().zip(&mut b.projections) {
                if targets.contains(name) {
                    super::peft::wrap(proj, r, alpha)?;
                }
            }
        }
        Ok(())
    }

    /// The module names that carry LoRA adapters, in block order.
    pub fn lora_targets(&self) -> Vec<&'static str> {
        let names = self.cfg.naming.projections();
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.blocks
                    .iter()
                    .any(|b| matches!(b.projections[*i], Projection::Lora(_)))
            })
            .map(|(_, (_, t))| *t)
            .collect()
    }

    /// The LoRA adapters under PEFT's names
    /// (`base_model.model.transformer.encoder.layers.0.self_attention.query_key_value.lora_A.weight`).
    pub fn lora_parameters(&self) -> Vec<(String, Tensor)> {
        super::peft::lora_parameters(self.named_parameters())
    }

    /// Loads a PEFT LoRA adapter directory, or a P-tuning v2 prefix encoder that
    /// [`Glm::save_adapter`] wrote (`prefix_config.json`), onto this model.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        if dir.join("prefix_config.json").exists() {
            let c = &self.cfg;
            let enc = PrefixEncoder::load(dir, c.hidden, c.layers, c.kv_heads, c.head_dim)?;
            return self.set_prefix(enc);
        }
        let c = super::peft::read_config(dir, self.cfg.naming.targets())?;
        let targets: Vec<&str> = c.targets.iter().map(String::as_str).collect();
        self.add_lora_to(c.r, c.alpha, &targets)?;
        self.set_lora_dropout(c.dropout)?;
        super::peft::load_weights(dir, &self.lora_parameters())
    }

    /// Writes the LoRA adapter as PEFT does, or the P-tuning v2 prefix encoder, each file
    /// crash-safely.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        if let Some(enc) = &self.prefix {
            return enc.save(dir);
        }
        let projections = self.blocks.iter().flat_map(|b| b.projections.iter());
        let params = self.lora_parameters();
        super::peft::save(dir, projections, &params, &self.lora_targets(), false)
    }

    /// PEFT's `lora_dropout` on every LoRA adapter.
    pub fn set_lora_dropout(&mut self, p: f64) -> Result<()> {
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| err("a layer is shared"))?;
            b.projections
                .iter_mut()
                .for_each(|proj| proj.set_lora_dropout(p));
        }
        Ok(())
    }

    /// Training (LoRA and prefix dropout on) or eval mode.
    pub fn train(&self, on: bool) {
        for b in &self.blocks {
            b.projections.iter().for_each(|p| p.train(on));
        }
    }

    /// Folds every LoRA adapter into its base weight (PEFT's `merge_and_unload`).
    pub fn merge_lora(&mut self) -> Result<()> {
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| {
                err("merge_lora: a layer is shared; merge before using the model")
            })?;
            for proj in &mut b.projections {
                super::peft::merge(proj)?;
            }
        }
        Ok(())
    }

    /// Writes `config.json` and `model.safetensors` (f32, the checkpoint's own names). A model
    /// with LoRA adapters must be merged first.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        if !self.lora_targets().is_empty() {
            return Err(err(
                "save_pretrained: merge the LoRA adapters first (merge_lora)",
            ));
        }
        let params: Vec<(String, Tensor)> = self
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.detach()))
            .collect();
        let mut config = self.cfg.json.clone();
        let key = match self.cfg.naming {
            Naming::ChatGlm => "torch_dtype",
            Naming::Glm => "dtype",
        };
        config[key] = "float32".into();
        super::peft::save_pretrained(dir, &params, &config)
    }

    /// Logits `[B, T, vocab]` of `ids` `[B, T]`, padded keys hidden where `key_pad_mask`
    /// (`[B, T]`) is 1.0; layers under `seg`/`mode`/`policy`.
    pub fn logits_hidden(
        &self,
        ids: &Indices,
        key_pad_mask: Option<&Tensor>,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let (h, modules) = self.embed(ids, key_pad_mask)?;
        let layers = self.cfg.naming.outer()[1];
        let h = run_blocks_with_policy(&modules, &h, seg, mode, layers, policy)?;
        h.rms_norm(&self.final_norm, self.cfg.eps)?
            .linear(&self.output_layer, None)
    }

    /// The embedded batch and the layers bound to its key mask and positions.
    pub fn embed(
        &self,
        ids: &Indices,
        key_pad_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<Rc<dyn Module>>)> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let positions = Indices::new((0..t as i64).collect(), &[t])?;
        let h = self.embedding.forward(ids)?;
        let (prefix, mask) =
            match &self.prefix {
                None => (
                    vec![None; self.blocks.len()],
                    key_pad_mask.map(|m| m.reshape(&[b, 1, 1, t])).transpose()?,
                ),
                // Every query sees the whole prefix: the key mask grows by P visible keys.
                Some(enc) => {
                    let p = enc.tokens;
                    let mask =
                        match key_pad_mask {
                            Some(m) => {
                                let visible = Tensor::zeros(&[b, p], m.dtype())?;
                                Some(
                                    Tensor::cat(&[&visible, &m.reshape(&[b, t])?], 1)?
                                        .reshape(&[b, 1, 1, p + t])?,
                                )
                            }
                            None => None,
                        };
                    (enc.keys_values(b)?.into_iter().map(Some).collect(), mask)
                }
            };
        let modules = self
            .blocks
            .iter()
            .zip(prefix)
            .map(|(blk, prefix)| {
                Rc::new(Masked {
                    block: blk.clone(),
                    mask: mask.clone(),
                    positions: positions.clone(),
                    prefix,
                }) as Rc<dyn Module>
            })
            .collect();
        Ok((h, modules))
    }
}

impl Parameters for Glm {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let [embedding, layers, norm, head] = self.cfg.naming.outer();
        let mut p = prefixed(embedding, self.embedding.named_parameters());
        for (i, b) in self.blocks.iter().enumerate() {
            p.extend(prefixed(&format!("{layers}.{i}"), b.named_parameters()));
        }
        p.push((norm.to_string(), self.final_norm.clone()));
        p.push((head.to_string(), self.output_layer.clone()));
        if let Some(enc) = &self.prefix {
            p.extend(enc.named_parameters());
        }
        p
    }
}

impl super::CausalLm for Glm {
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
        // A P-tuning prefix fills the caches first; positions still count from the text.
        let skip = match &self.prefix {
            Some(enc) => {
                if cache.is_empty() {
                    *cache = enc
                        .keys_values(ids.shape()[0])?
                        .into_iter()
                        .map(|(k, v)| KvCache::from_kv(k, v))
                        .collect();
                }
                enc.tokens
            }
            None => 0,
        };
        let positions = super::lm::next_positions(ids, cache, self.blocks.len(), skip)?;
        let mut h = self.embedding.forward(ids)?;
        for (blk, c) in self.blocks.iter().zip(cache.iter_mut()) {
            h = blk.forward_with(&h, None, &positions, Some(c), None)?;
        }
        h.rms_norm(&self.final_norm, self.cfg.eps)?
            .linear(&self.output_layer, None)
    }
    fn token_embedding(&self) -> &Embedding {
        &self.embedding
    }
    fn embedding_prefixes(&self) -> &'static [&'static str] {
        match self.cfg.naming {
            Naming::ChatGlm => &["transformer.embedding."],
            Naming::Glm => &["model.embed_tokens."],
        }
    }
    fn block_prefix(&self, i: usize) -> String {
        format!("{}.{i}.", self.cfg.naming.outer()[1])
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab
    }
    fn max_positions(&self) -> usize {
        self.cfg.positions
    }
    fn layers(&self) -> usize {
        self.blocks.len()
    }
    fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        Glm::load_adapter(self, dir)
    }
    fn add_prefix(&mut self, tokens: usize, projection: bool) -> Result<()> {
        Glm::add_prefix(self, tokens, projection)
    }
    fn set_lora_dropout(&mut self, p: f64) -> Result<()> {
        Glm::set_lora_dropout(self, p)
    }
    fn train(&self, on: bool) {
        Glm::train(self, on)
    }
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        Glm::save_adapter(self, dir)
    }
    fn merge_and_save(&mut self, dir: &Path) -> Result<()> {
        self.merge_lora()?;
        self.save_pretrained(dir)
    }
}

fn sizes(v: &serde_json::Value) -> Result<super::lm::Sizes> {
    let c = GlmConfig::from_value(v.clone())?;
    Ok(super::lm::Sizes {
        d: c.hidden,
        heads: c.heads,
        layers: c.layers,
        vocab: c.vocab,
        positions: c.positions,
    })
}

fn load(
    ckpt: &super::lm::Checkpoint,
    rank: usize,
    alpha: f64,
    targets: &[&str],
) -> Result<Box<dyn super::CausalLm>> {
    let mut m = Glm::load_with(GlmConfig::from_value(ckpt.config.clone())?, &ckpt.dir)?;
    if rank > 0 {
        m.add_lora_to(rank, alpha, targets)?;
    }
    Ok(Box::new(m))
}

fn tiny(
    config: &serde_json::Value,
    rank: usize,
    alpha: f64,
    targets: &[&str],
) -> Result<Box<dyn super::CausalLm>> {
    let keys = match config["model_type"].as_str() {
        Some("chatglm") => [
            "num_layers",
            "hidden_size",
            "ffn_hidden_size",
            "num_attention_heads",
            "multi_query_group_num",
            "kv_channels",
            "padded_vocab_size",
            "seq_length",
        ],
        _ => [
            "num_hidden_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "vocab_size",
            "max_position_embeddings",
        ],
    };
    let mut m = Glm::new(GlmConfig::from_value(super::lm::tiny_config(config, keys))?)?;
    if rank > 0 {
        m.add_lora_to(rank, alpha, targets)?;
    }
    Ok(Box::new(m))
}

/// ChatGLM3 as `train --model` sees it: PEFT's default LoRA target is `query_key_value`.
pub const CHATGLM: super::lm::Family = super::lm::Family {
    model_type: "chatglm",
    tensor_names: &["attn_probs"],
    lora_targets: &CHATGLM_TARGETS,
    default_lora_targets: &["query_key_value"],
    sizes,
    load,
    tiny,
};

/// transformers' GLM (PEFT has no default for it: q_proj and v_proj, as for Llama).
pub const GLM: super::lm::Family = super::lm::Family {
    model_type: "glm",
    lora_targets: &GLM_TARGETS,
    default_lora_targets: &["q_proj", "v_proj"],
    ..CHATGLM
};
