//! Llama and Qwen2 (`LlamaForCausalLM`, `Qwen2ForCausalLM`) from a transformers checkpoint:
//! RMSNorm, rotary embeddings in halves, grouped-query attention, a SwiGLU MLP
//! (`down(silu(gate(x)) · up(x))`), tied or untied head. Qwen2 is Llama with q/k/v biases.
//! Position ids are 0…T−1 in every row, as transformers' default (padding or not).

use crate::data::Batch;
use rewind::checkpoint::{
    BlockCosts, CheckpointMode, SavePolicy, Segmentation, run_blocks_with_policy,
};
use rewind::error::{Error, Result};
use rewind::indices::Indices;
use rewind::nn::attention::{KvCache, causal_attention};
use rewind::nn::{Embedding, Linear, Module, Parameters, Projection, prefixed};
use rewind::ops::rope::{Rope, RopeLayout};
use rewind::tensor::Tensor;
use std::path::Path;
use std::rc::Rc;

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("llama", msg)
}

/// The sizes and choices of a Llama or Qwen2 `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `llama` or `qwen2`.
    pub model_type: String,
    /// Width.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer: grouped-query attention).
    pub kv_heads: usize,
    /// Dims per head.
    pub head_dim: usize,
    /// The MLP's hidden width.
    pub intermediate: usize,
    /// RMSNorm's ε.
    pub eps: f64,
    /// Token ids.
    pub vocab: usize,
    /// `max_position_embeddings`.
    pub positions: usize,
    /// Biases on q, k, v (Qwen2; Llama's `attention_bias`, which also covers o).
    pub qkv_bias: bool,
    /// A bias on o (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases in the MLP (`mlp_bias`).
    pub mlp_bias: bool,
    /// The head shares the token embedding.
    pub tied: bool,
    /// The rotary embedding's frequencies.
    pub rope: Rope,
    /// The parsed `config.json`, written back by `save_pretrained`.
    pub json: serde_json::Value,
}

fn usize_of(v: &serde_json::Value, key: &str) -> Result<usize> {
    v[key]
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| err(format!("config.json: `{key}` is missing or not a count")))
}

impl LlamaConfig {
    /// Parses `config.json`'s text. Rope parameters come from transformers 5.x's
    /// `rope_parameters` or older configs' `rope_theta` and `rope_scaling`; rope types
    /// `default` and `llama3` are supported, any other is an error naming it.
    pub fn from_json(text: &str) -> Result<LlamaConfig> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("config.json: {e}")))?;
        LlamaConfig::from_value(v)
    }

    /// [`LlamaConfig::from_json`] on a parsed `config.json`.
    pub fn from_value(v: serde_json::Value) -> Result<LlamaConfig> {
        let model_type = v["model_type"].as_str().unwrap_or_default().to_string();
        if model_type != "llama" && model_type != "qwen2" {
            return Err(err(format!(
                "model_type `{model_type}` is not llama or qwen2"
            )));
        }
        if v["use_sliding_window"].as_bool() == Some(true) {
            return Err(err(
                "config.json: sliding-window attention is not supported",
            ));
        }
        let (hidden, heads) = (
            usize_of(&v, "hidden_size")?,
            usize_of(&v, "num_attention_heads")?,
        );
        let kv_heads = v["num_key_value_heads"]
            .as_u64()
            .map_or(heads, |x| x as usize);
        let head_dim = v["head_dim"]
            .as_u64()
            .map_or(hidden / heads.max(1), |x| x as usize);
        if heads == 0
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || !head_dim.is_multiple_of(2)
        {
            return Err(err(format!(
                "config.json: {heads} heads over {kv_heads} KV heads of {head_dim} dims"
            )));
        }
        let rope = super::rope_config::rope(&v, head_dim, RopeLayout::Halves)?;
        let qwen = model_type == "qwen2";
        let attention_bias = v["attention_bias"].as_bool().unwrap_or(false);
        Ok(LlamaConfig {
            hidden,
            layers: usize_of(&v, "num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            intermediate: usize_of(&v, "intermediate_size")?,
            eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            vocab: usize_of(&v, "vocab_size")?,
            positions: usize_of(&v, "max_position_embeddings")?,
            qkv_bias: qwen || attention_bias,
            o_bias: attention_bias,
            mlp_bias: v["mlp_bias"].as_bool().unwrap_or(false),
            tied: v["tie_word_embeddings"].as_bool().unwrap_or(qwen),
            rope,
            model_type,
            json: v,
        })
    }
}

/// One decoder layer: x + o(attn(rope(q), rope(k), v)) on input_layernorm(x), then
/// + down(silu(gate) · up) on post_attention_layernorm.
#[derive(Debug)]
pub struct LlamaBlock {
    input_layernorm: Tensor,
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    post_attention_layernorm: Tensor,
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
    cfg: Rc<LlamaConfig>,
}

/// The projections PEFT's `target_modules` can name in a Llama or Qwen2 layer.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl LlamaBlock {
    fn new(cfg: &Rc<LlamaConfig>) -> Result<LlamaBlock> {
        let (d, hd, i) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
        let lin = |a, b, bias| Linear::new(a, b, bias).map(Projection::Plain);
        let ones = || Tensor::ones(&[d], rewind::DType::F32)?.requires_grad_(true);
        Ok(LlamaBlock {
            input_layernorm: ones()?,
            q_proj: lin(d, cfg.heads * hd, cfg.qkv_bias)?,
            k_proj: lin(d, cfg.kv_heads * hd, cfg.qkv_bias)?,
            v_proj: lin(d, cfg.kv_heads * hd, cfg.qkv_bias)?,
            o_proj: lin(cfg.heads * hd, d, cfg.o_bias)?,
            post_attention_layernorm: ones()?,
            gate_proj: lin(d, i, cfg.mlp_bias)?,
            up_proj: lin(d, i, cfg.mlp_bias)?,
            down_proj: lin(i, d, cfg.mlp_bias)?,
            cfg: cfg.clone(),
        })
    }

    fn projections(&self) -> [(&'static str, &'static str, &Projection); 7] {
        [
            ("self_attn.q_proj", "q_proj", &self.q_proj),
            ("self_attn.k_proj", "k_proj", &self.k_proj),
            ("self_attn.v_proj", "v_proj", &self.v_proj),
            ("self_attn.o_proj", "o_proj", &self.o_proj),
            ("mlp.gate_proj", "gate_proj", &self.gate_proj),
            ("mlp.up_proj", "up_proj", &self.up_proj),
            ("mlp.down_proj", "down_proj", &self.down_proj),
        ]
    }

    fn projections_mut(&mut self) -> [(&'static str, &mut Projection); 7] {
        [
            ("q_proj", &mut self.q_proj),
            ("k_proj", &mut self.k_proj),
            ("v_proj", &mut self.v_proj),
            ("o_proj", &mut self.o_proj),
            ("gate_proj", &mut self.gate_proj),
            ("up_proj", &mut self.up_proj),
            ("down_proj", &mut self.down_proj),
        ]
    }

    /// The layer with padded keys hidden by `key_mask` (`[B, 1, 1, T]`, 1.0 = hidden).
    pub fn forward_masked(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        positions: &Indices,
    ) -> Result<Tensor> {
        self.forward_with(x, key_mask, positions, None)
    }

    /// The layer over the whole sequence, or (`cache`) over the next positions after those
    /// the cache holds.
    fn forward_with(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        positions: &Indices,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let h = x.rms_norm(&self.input_layernorm, c.eps)?;
        let heads = |p: &Projection, n: usize| -> Result<Tensor> {
            p.module()
                .forward(&h)?
                .reshape(&[b, t, n, c.head_dim])?
                .permute(&[0, 2, 1, 3])
        };
        let q = heads(&self.q_proj, c.heads)?.rope(&c.rope, positions)?;
        let k = heads(&self.k_proj, c.kv_heads)?.rope(&c.rope, positions)?;
        let v = heads(&self.v_proj, c.kv_heads)?;
        let ctx = match cache {
            Some(c) => c.attend(&q, &k, &v)?,
            None => causal_attention(&q, &k, &v, key_mask)?,
        };
        let x = x.add(&self.o_proj.module().forward(&ctx)?)?;
        let h = x.rms_norm(&self.post_attention_layernorm, c.eps)?;
        let gate = self.gate_proj.module().forward(&h)?.silu()?;
        let up = self.up_proj.module().forward(&h)?;
        x.add(&self.down_proj.module().forward(&gate.mul(&up)?)?)
    }
}

impl Parameters for LlamaBlock {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![(
            "input_layernorm.weight".to_string(),
            self.input_layernorm.clone(),
        )];
        for (name, _, proj) in self.projections() {
            super::peft::named(&mut p, name, proj);
        }
        p.push((
            "post_attention_layernorm.weight".to_string(),
            self.post_attention_layernorm.clone(),
        ));
        p
    }
}

/// A layer bound to one batch's key mask and positions, for checkpoint segments.
struct Masked {
    block: Rc<LlamaBlock>,
    mask: Option<Tensor>,
    positions: Indices,
}

impl Parameters for Masked {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.block.named_parameters()
    }
}

impl Module for Masked {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block
            .forward_masked(x, self.mask.as_ref(), &self.positions)
    }
}

/// `LlamaForCausalLM` or `Qwen2ForCausalLM`.
#[derive(Debug)]
pub struct Llama {
    /// Sizes and choices.
    pub cfg: Rc<LlamaConfig>,
    /// Token embeddings (`model.embed_tokens`).
    pub embed_tokens: Embedding,
    /// The layers (`model.layers.{i}`).
    pub blocks: Vec<Rc<LlamaBlock>>,
    /// Final norm's weight (`model.norm`).
    pub norm: Tensor,
    /// The head (`lm_head`), `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
}

impl Llama {
    /// A model of `cfg`'s sizes drawn from the engine generator.
    pub fn new(cfg: LlamaConfig) -> Result<Llama> {
        let cfg = Rc::new(cfg);
        Ok(Llama {
            embed_tokens: Embedding::new(cfg.vocab, cfg.hidden)?,
            blocks: (0..cfg.layers)
                .map(|_| LlamaBlock::new(&cfg).map(Rc::new))
                .collect::<Result<_>>()?,
            norm: Tensor::ones(&[cfg.hidden], rewind::DType::F32)?.requires_grad_(true)?,
            lm_head: if cfg.tied {
                None
            } else {
                Some(
                    Linear::new(cfg.hidden, cfg.vocab, false)?
                        .weight
                        .requires_grad_(true)?,
                )
            },
            cfg,
        })
    }

    /// Loads `dir/config.json` and its weights (one file or shards; f32, f16 or bf16). A
    /// missing or mis-shaped tensor names its key.
    pub fn load(dir: &Path) -> Result<Llama> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("llama", &path, e))?;
        Llama::load_with(LlamaConfig::from_json(&text)?, dir)
    }

    /// The model `cfg` describes with the weights in `dir`.
    pub fn load_with(cfg: LlamaConfig, dir: &Path) -> Result<Llama> {
        // Every parameter is replaced by the checkpoint's: no draws.
        let m = {
            let _skip = rewind::nn::SkipInit::new();
            Llama::new(cfg)?
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
        Ok(m)
    }

    /// PEFT's `get_peft_model` with LoRA (rank `r`, scale α/r) on `targets`: every other
    /// parameter is frozen.
    pub fn add_lora_to(&mut self, r: usize, alpha: f64, targets: &[&str]) -> Result<()> {
        if let Some(t) = targets.iter().find(|t| !LORA_TARGETS.contains(t)) {
            return Err(err(format!(
                "LoRA target `{t}` is not a {} projection ({})",
                self.cfg.model_type,
                LORA_TARGETS.join(", ")
            )));
        }
        for (_, p) in self.named_parameters() {
            p.requires_grad_(false)?;
        }
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| {
                err("add_lora: a layer is shared; add LoRA before using the model")
            })?;
            for (name, proj) in b.projections_mut() {
                if targets.contains(&name) {
                    super::peft::wrap(proj, r, alpha)?;
                }
            }
        }
        Ok(())
    }

    /// The module names that carry LoRA adapters, in [`LORA_TARGETS`] order.
    pub fn lora_targets(&self) -> Vec<&'static str> {
        LORA_TARGETS
            .iter()
            .copied()
            .filter(|t| {
                self.blocks.iter().any(|b| {
                    b.projections()
                        .iter()
                        .any(|(_, n, p)| n == t && matches!(p, Projection::Lora(_)))
                })
            })
            .collect()
    }

    /// The LoRA adapters under PEFT's names
    /// (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
    pub fn lora_parameters(&self) -> Vec<(String, Tensor)> {
        super::peft::lora_parameters(self.named_parameters())
    }

    /// Loads a PEFT LoRA adapter directory onto this model (see [`super::peft::read_config`]
    /// for what it accepts).
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let c = super::peft::read_config(dir, &LORA_TARGETS)?;
        let targets: Vec<&str> = c.targets.iter().map(String::as_str).collect();
        self.add_lora_to(c.r, c.alpha, &targets)?;
        self.set_lora_dropout(c.dropout)?;
        super::peft::load_weights(dir, &self.lora_parameters())
    }

    /// Writes the LoRA adapter as PEFT does, each file crash-safely.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        let projections = self
            .blocks
            .iter()
            .flat_map(|b| b.projections().map(|(_, _, p)| p));
        let params = self.lora_parameters();
        super::peft::save(dir, projections, &params, &self.lora_targets(), false)
    }

    /// PEFT's `lora_dropout` on every LoRA adapter.
    pub fn set_lora_dropout(&mut self, p: f64) -> Result<()> {
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| err("a layer is shared"))?;
            for (_, proj) in b.projections_mut() {
                proj.set_lora_dropout(p);
            }
        }
        Ok(())
    }

    /// Training (LoRA dropout on) or eval mode.
    pub fn train(&self, on: bool) {
        for b in &self.blocks {
            b.projections().iter().for_each(|(_, _, p)| p.train(on));
        }
    }

    /// Folds every LoRA adapter into its base weight (PEFT's `merge_and_unload`).
    pub fn merge_lora(&mut self) -> Result<()> {
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| {
                err("merge_lora: a layer is shared; merge before using the model")
            })?;
            for (_, proj) in b.projections_mut() {
                super::peft::merge(proj)?;
            }
        }
        Ok(())
    }

    /// Writes `config.json` and `model.safetensors` (f32, a tied head not stored) as
    /// transformers' `save_pretrained` does. A model with LoRA adapters must be merged first.
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
        config["dtype"] = "float32".into();
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
        let h = run_blocks_with_policy(&modules, &h, seg, mode, "model.layers", policy)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens.weight);
        h.rms_norm(&self.norm, self.cfg.eps)?.linear(head, None)
    }

    /// The embedded batch and the layers bound to its key mask and positions.
    pub fn embed(
        &self,
        ids: &Indices,
        key_pad_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<Rc<dyn Module>>)> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let positions = Indices::new((0..t as i64).collect(), &[t])?;
        let h = self.embed_tokens.forward(ids)?;
        let mask = key_pad_mask.map(|m| m.reshape(&[b, 1, 1, t])).transpose()?;
        let modules = self
            .blocks
            .iter()
            .map(|blk| {
                Rc::new(Masked {
                    block: blk.clone(),
                    mask: mask.clone(),
                    positions: positions.clone(),
                }) as Rc<dyn Module>
            })
            .collect();
        Ok((h, modules))
    }
}

impl Parameters for Llama {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("model.embed_tokens", self.embed_tokens.named_parameters());
        for (i, b) in self.blocks.iter().enumerate() {
            p.extend(prefixed(&format!("model.layers.{i}"), b.named_parameters()));
        }
        p.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            p.push(("lm_head.weight".to_string(), h.clone()));
        }
        p
    }
}

impl super::CausalLm for Llama {
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
        let positions = super::lm::next_positions(ids, cache, self.blocks.len(), 0)?;
        let mut h = self.embed_tokens.forward(ids)?;
        for (blk, c) in self.blocks.iter().zip(cache.iter_mut()) {
            h = blk.forward_with(&h, None, &positions, Some(c))?;
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens.weight);
        h.rms_norm(&self.norm, self.cfg.eps)?.linear(head, None)
    }
    fn token_embedding(&self) -> &Embedding {
        &self.embed_tokens
    }
    fn embedding_prefixes(&self) -> &'static [&'static str] {
        &["model.embed_tokens."]
    }
    fn block_prefix(&self, i: usize) -> String {
        format!("model.layers.{i}.")
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
        Llama::load_adapter(self, dir)
    }
    fn set_lora_dropout(&mut self, p: f64) -> Result<()> {
        Llama::set_lora_dropout(self, p)
    }
    fn train(&self, on: bool) {
        Llama::train(self, on)
    }
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        Llama::save_adapter(self, dir)
    }
    fn merge_and_save(&mut self, dir: &Path) -> Result<()> {
        self.merge_lora()?;
        self.save_pretrained(dir)
    }
}

fn sizes(v: &serde_json::Value) -> Result<super::lm::Sizes> {
    let c = LlamaConfig::from_value(v.clone())?;
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
    let mut m = Llama::load_with(LlamaConfig::from_value(ckpt.config.clone())?, &ckpt.dir)?;
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
    let keys = [
        "num_hidden_layers",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
    ];
    let mut m = Llama::new(LlamaConfig::from_value(super::lm::tiny_config(
        config, keys,
    ))?)?;
    if rank > 0 {
        m.add_lora_to(rank, alpha, targets)?;
    }
    Ok(Box::new(m))
}

/// Llama as `train --model` sees it.
pub const LLAMA: super::lm::Family = super::lm::Family {
    model_type: "llama",
    tensor_names: &["attn_probs"],
    lora_targets: &LORA_TARGETS,
    default_lora_targets: &["q_proj", "v_proj"],
    sizes,
    load,
    tiny,
};

/// Qwen2 as `train --model` sees it.
pub const QWEN2: super::lm::Family = super::lm::Family {
    model_type: "qwen2",
    ..LLAMA
};
