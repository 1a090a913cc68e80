//! GPT-2 as transformers defines it (`GPT2LMHeadModel`), loaded from the directory that
//! `save_pretrained(…, safe_serialization=True)` writes: `config.json` and `model.safetensors`
//! with transformers' names. transformers stores its `Conv1D` weights as `[in, out]`; they are
//! kept here transposed, as `Linear` weights `[out, in]`. The LM head is tied to `wte`.
//! Padded batches follow HF's attention-mask semantics: padded keys are hidden from every query.

use rewind::checkpoint::{CheckpointMode, SavePolicy, Segmentation, run_blocks_with_policy};
use rewind::error::{Error, Result};
use rewind::indices::Indices;
use rewind::nn::attention::KvCache;
use rewind::nn::{Embedding, LayerNorm, Linear, Module, Parameters, Projection, prefixed};
use rewind::ops::gelu::GeluApprox;
use rewind::tensor::Tensor;
use safetensors::SafeTensors;
use std::path::Path;
use std::rc::Rc;

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("gpt2", msg)
}

/// The fields of transformers' `GPT2Config` that define the computation.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence (position table).
    pub n_positions: usize,
    /// Width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Layer-norm epsilon.
    pub layer_norm_epsilon: f64,
}

impl Gpt2Config {
    /// Parses `config.json`'s text (see [`Gpt2Config::from_value`]).
    pub fn from_json(text: &str) -> Result<Gpt2Config> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("config.json: {e}")))?;
        Gpt2Config::from_value(&v)
    }

    /// Reads a parsed `config.json`; unknown architectures, unsupported activations and
    /// inconsistent sizes are errors that name the field.
    pub fn from_value(v: &serde_json::Value) -> Result<Gpt2Config> {
        let model_type = v["model_type"].as_str().unwrap_or("");
        if model_type != "gpt2" {
            return Err(err(format!(
                "config.json: model_type {model_type:?} is not supported (only \"gpt2\")"
            )));
        }
        let count = |key: &str| -> Result<usize> {
            v[key]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| err(format!("config.json: `{key}` must be a positive integer")))
        };
        let act = v["activation_function"].as_str().unwrap_or("gelu_new");
        if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
            return Err(err(format!(
                "config.json: activation_function {act:?} is not supported (gelu_new, gelu_pytorch_tanh)"
            )));
        }
        let cfg = Gpt2Config {
            vocab_size: count("vocab_size")?,
            n_positions: count("n_positions")?,
            n_embd: count("n_embd")?,
            n_layer: count("n_layer")?,
            n_head: count("n_head")?,
            layer_norm_epsilon: v["layer_norm_epsilon"].as_f64().unwrap_or(1e-5),
        };
        if !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(err(format!(
                "config.json: n_head {} does not divide n_embd {}",
                cfg.n_head, cfg.n_embd
            )));
        }
        if let Some(inner) = v["n_inner"].as_u64()
            && inner as usize != 4 * cfg.n_embd
        {
            return Err(err(format!(
                "config.json: n_inner {inner} is not supported (only 4 × n_embd)"
            )));
        }
        if v["tie_word_embeddings"].as_bool() == Some(false) {
            return Err(err(
                "config.json: tie_word_embeddings false is not supported (GPT-2 ties its head)",
            ));
        }
        if v["scale_attn_by_inverse_layer_idx"].as_bool() == Some(true)
            || v["reorder_and_upcast_attn"].as_bool() == Some(true)
        {
            return Err(err(
                "config.json: scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn are not supported",
            ));
        }
        Ok(cfg)
    }
}

/// One GPT-2 block: x + attn(ln_1(x)), then + mlp(ln_2(·)).
#[derive(Debug)]
pub struct Gpt2Block {
    /// First norm.
    pub ln_1: LayerNorm,
    /// Fused q, k, v projection (`attn.c_attn`), `[3d, d]`; LoRA-adapted by [`Gpt2::add_lora`].
    pub c_attn: Projection,
    /// Attention output projection (`attn.c_proj`).
    pub c_proj: Projection,
    /// Second norm.
    pub ln_2: LayerNorm,
    /// MLP up projection (`mlp.c_fc`).
    pub c_fc: Projection,
    /// MLP down projection (`mlp.c_proj`).
    pub mlp_proj: Projection,
    heads: usize,
}

impl Gpt2Block {
    fn new(cfg: &Gpt2Config) -> Result<Gpt2Block> {
        let d = cfg.n_embd;
        let norm = || -> Result<LayerNorm> {
            let mut ln = LayerNorm::new(d)?;
            ln.eps = cfg.layer_norm_epsilon;
            Ok(ln)
        };
        Ok(Gpt2Block {
            ln_1: norm()?,
            c_attn: Projection::Plain(Linear::new(d, 3 * d, true)?),
            c_proj: Projection::Plain(Linear::new(d, d, true)?),
            ln_2: norm()?,
            c_fc: Projection::Plain(Linear::new(d, 4 * d, true)?),
            mlp_proj: Projection::Plain(Linear::new(4 * d, d, true)?),
            heads: cfg.n_head,
        })
    }

    fn attention(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let (h, dh) = (self.heads, d / self.heads);
        let qkv = self.c_attn.module().forward(x)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape(&[b, t, h, dh])?
                .permute(&[0, 2, 1, 3])
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let ctx = match cache {
            Some(c) => c.attend(&q, &k, &v)?,
            None => super::causal_attention(&q, &k, &v, key_mask)?,
        };
        self.c_proj.module().forward(&ctx)
    }

    /// The block with padded keys hidden by `key_mask` (`[B, 1, 1, T]`, 1.0 = hidden).
    pub fn forward_masked(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(x, key_mask, None)
    }

    /// The block over the whole sequence, or (`cache`) over the next positions after those
    /// the cache holds.
    fn forward_with(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let h = x.add(&self.attention(&self.ln_1.forward(x)?, key_mask, cache)?)?;
        let up = self.c_fc.module().forward(&self.ln_2.forward(&h)?)?;
        let m = self
            .mlp_proj
            .module()
            .forward(&up.gelu_with(GeluApprox::Tanh)?)?;
        h.add(&m)
    }
}

impl Parameters for Gpt2Block {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("ln_1", self.ln_1.named_parameters());
        super::peft::named(&mut p, "attn.c_attn", &self.c_attn);
        super::peft::named(&mut p, "attn.c_proj", &self.c_proj);
        p.extend(prefixed("ln_2", self.ln_2.named_parameters()));
        super::peft::named(&mut p, "mlp.c_fc", &self.c_fc);
        super::peft::named(&mut p, "mlp.c_proj", &self.mlp_proj);
        p
    }
}

/// The projections PEFT's `target_modules` can name in a GPT-2 block (`c_proj` names both
/// the attention output and the MLP down projection, as PEFT's suffix match does).
pub const LORA_TARGETS: [&str; 3] = ["c_attn", "c_proj", "c_fc"];

/// GPT-2 as `train --model` sees it (its blocks name the attention probabilities).
pub const FAMILY: super::lm::Family = super::lm::Family {
    model_type: "gpt2",
    tensor_names: &["attn_probs"],
    lora_targets: &LORA_TARGETS,
    default_lora_targets: &["c_attn"],
    sizes: |v| {
        let c = Gpt2Config::from_value(v)?;
        Ok(super::lm::Sizes {
            d: c.n_embd,
            heads: c.n_head,
            layers: c.n_layer,
            vocab: c.vocab_size,
            positions: c.n_positions,
        })
    },
    load: |ckpt, rank, alpha, targets| {
        let mut m = Gpt2::load_with(Gpt2Config::from_value(&ckpt.config)?, &ckpt.dir)?;
        if rank > 0 {
            m.add_lora_to(rank, alpha, targets)?;
        }
        Ok(Box::new(m))
    },
    tiny: |config, rank, alpha, targets| {
        let keys = [
            "n_layer",
            "n_embd",
            "",
            "n_head",
            "",
            "",
            "vocab_size",
            "n_positions",
        ];
        let c = Gpt2Config::from_value(&super::lm::tiny_config(config, keys))?;
        let mut m = Gpt2::new(c)?;
        if rank > 0 {
            m.add_lora_to(rank, alpha, targets)?;
        }
        Ok(Box::new(m))
    },
};

impl Gpt2Block {
    fn projections_mut(&mut self) -> [(&'static str, &mut Projection); 4] {
        [
            ("c_attn", &mut self.c_attn),
            ("c_proj", &mut self.c_proj),
            ("c_fc", &mut self.c_fc),
            ("c_proj", &mut self.mlp_proj),
        ]
    }

    fn projections(&self) -> [(&'static str, &Projection); 4] {
        [
            ("c_attn", &self.c_attn),
            ("c_proj", &self.c_proj),
            ("c_fc", &self.c_fc),
            ("c_proj", &self.mlp_proj),
        ]
    }
}

/// A block bound to one batch's key mask, for checkpoint segments.
struct Masked {
    block: Rc<Gpt2Block>,
    mask: Option<Tensor>,
}

impl Parameters for Masked {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.block.named_parameters()
    }
}

impl Module for Masked {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block.forward_masked(x, self.mask.as_ref())
    }
}

/// `GPT2LMHeadModel`.
#[derive(Debug)]
pub struct Gpt2 {
    /// Sizes.
    pub cfg: Gpt2Config,
    /// Token embeddings (`transformer.wte`), also the LM head.
    pub wte: Embedding,
    /// Position embeddings (`transformer.wpe`).
    pub wpe: Embedding,
    /// The blocks (`transformer.h.{i}`).
    pub blocks: Vec<Rc<Gpt2Block>>,
    /// Final norm (`transformer.ln_f`).
    pub ln_f: LayerNorm,
}

/// Whether transformers stores this parameter as a `Conv1D` weight (`[in, out]`).
fn is_conv1d_weight(name: &str) -> bool {
    name.ends_with("c_attn.weight")
        || name.ends_with("c_proj.weight")
        || name.ends_with("c_fc.weight")
}

impl Gpt2 {
    /// A model drawn from the engine generator.
    pub fn new(cfg: Gpt2Config) -> Result<Gpt2> {
        let mut ln_f = LayerNorm::new(cfg.n_embd)?;
        ln_f.eps = cfg.layer_norm_epsilon;
        Ok(Gpt2 {
            wte: Embedding::new(cfg.vocab_size, cfg.n_embd)?,
            wpe: Embedding::new(cfg.n_positions, cfg.n_embd)?,
            blocks: (0..cfg.n_layer)
                .map(|_| Gpt2Block::new(&cfg).map(Rc::new))
                .collect::<Result<_>>()?,
            ln_f,
            cfg,
        })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors` (f32 or f16 weights; f16 become
    /// f32 master copies). A missing or mis-shaped tensor, or another dtype, names its key.
    pub fn load(dir: &Path) -> Result<Gpt2> {
        let cfg_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| Error::io("gpt2", &cfg_path, e))?;
        Gpt2::load_with(Gpt2Config::from_json(&text)?, dir)
    }

    /// The model `cfg` describes with `dir/model.safetensors`'s weights.
    pub fn load_with(cfg: Gpt2Config, dir: &Path) -> Result<Gpt2> {
        // Every parameter is replaced by the checkpoint's: no draws.
        let model = {
            let _skip = rewind::nn::SkipInit::new();
            Gpt2::new(cfg)?
        };
        let st_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| Error::io("gpt2", &st_path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| err(format!("{}: {e}", st_path.display())))?;
        for (name, p) in model
            .hf_parameters()
            .into_iter()
            .filter(|(n, _)| !n.contains("lora_"))
        {
            let view = st
                .tensor(&name)
                .map_err(|_| err(format!("model.safetensors has no tensor `{name}`")))?;
            let want: Vec<usize> = if is_conv1d_weight(&name) {
                vec![p.shape()[1], p.shape()[0]]
            } else {
                p.shape().to_vec()
            };
            if view.shape() != want.as_slice() {
                return Err(err(format!(
                    "`{name}` has shape {:?}, the config needs {want:?}",
                    view.shape()
                )));
            }
            let values = super::hf::to_f32(&name, &view)?;
            let values = if is_conv1d_weight(&name) {
                transpose(&values, want[0], want[1])
            } else {
                values
            };
            p.set_data(values)?;
        }
        Ok(model)
    }

    /// PEFT's `get_peft_model` with LoRA on every block's `c_attn` (rank `r`, scale α/r):
    /// every other parameter is frozen; the adapters start as [`rewind::nn::LoraLinear::new`] draws them.
    pub fn add_lora(&mut self, r: usize, alpha: f64) -> Result<()> {
        self.add_lora_to(r, alpha, &["c_attn"])
    }

    /// [`Self::add_lora`] on the projections `targets` names (from [`LORA_TARGETS`]).
    pub fn add_lora_to(&mut self, r: usize, alpha: f64, targets: &[&str]) -> Result<()> {
        if r == 0 {
            return Err(err("LoRA rank 0"));
        }
        if let Some(t) = targets.iter().find(|t| !LORA_TARGETS.contains(t)) {
            return Err(err(format!(
                "LoRA target `{t}` is not a GPT-2 projection ({})",
                LORA_TARGETS.join(", ")
            )));
        }
        for (_, p) in self.hf_parameters() {
            p.requires_grad_(false)?;
        }
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| {
                err("add_lora: a block is shared; add LoRA before using the model")
            })?;
            for (name, proj) in b.projections_mut() {
                if targets.contains(&name) {
                    super::peft::wrap(proj, r, alpha)?;
                }
            }
        }
        Ok(())
    }

    /// The projection names that carry LoRA adapters, in [`LORA_TARGETS`] order.
    pub fn lora_targets(&self) -> Vec<&'static str> {
        LORA_TARGETS
            .iter()
            .copied()
            .filter(|t| {
                self.blocks.iter().any(|b| {
                    b.projections()
                        .iter()
                        .any(|(n, p)| n == t && matches!(p, Projection::Lora(_)))
                })
            })
            .collect()
    }

    /// The LoRA adapters under PEFT's names (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`).
    pub fn lora_parameters(&self) -> Vec<(String, Tensor)> {
        super::peft::lora_parameters(self.hf_parameters())
    }

    /// Loads a PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`)
    /// onto this model: LoRA on its projections, no DoRA/rsLoRA/bias.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let c = super::peft::read_config(dir, &LORA_TARGETS)?;
        let targets: Vec<&str> = c.targets.iter().map(String::as_str).collect();
        self.add_lora_to(c.r, c.alpha, &targets)?;
        self.set_lora_dropout(c.dropout)?;
        super::peft::load_weights(dir, &self.lora_parameters())
    }

    /// Writes the LoRA adapter as PEFT does (`adapter_model.safetensors` with PEFT's names,
    /// `adapter_config.json`), each file crash-safely.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        let projections = self
            .blocks
            .iter()
            .flat_map(|b| b.projections().map(|(_, p)| p));
        let params = self.lora_parameters();
        super::peft::save(dir, projections, &params, &self.lora_targets(), true)
    }

    /// PEFT's `lora_dropout` on every LoRA adapter.
    pub fn set_lora_dropout(&mut self, p: f64) -> Result<()> {
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| err("a block is shared"))?;
            for (_, proj) in b.projections_mut() {
                proj.set_lora_dropout(p);
            }
        }
        Ok(())
    }

    /// Training (LoRA dropout on) or eval mode.
    pub fn train(&self, on: bool) {
        for b in &self.blocks {
            b.projections().iter().for_each(|(_, p)| p.train(on));
        }
    }

    /// Folds every LoRA adapter into its base weight (W ← W + (α/r)·B·A, PEFT's
    /// `merge_and_unload`) and drops the adapters: a plain GPT-2 again, all parameters frozen
    /// as the adapted model had them.
    pub fn merge_lora(&mut self) -> Result<()> {
        for blk in &mut self.blocks {
            let b = Rc::get_mut(blk).ok_or_else(|| {
                err("merge_lora: a block is shared; merge before using the model")
            })?;
            for (_, proj) in b.projections_mut() {
                super::peft::merge(proj)?;
            }
        }
        Ok(())
    }

    /// Writes `config.json` and `model.safetensors` as transformers' `save_pretrained` does
    /// (`Conv1D` weights `[in, out]`, the head tied and not stored), each file crash-safely.
    /// A model with LoRA adapters must be merged first.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        if !self.lora_targets().is_empty() {
            return Err(err(
                "save_pretrained: merge the LoRA adapters first (merge_lora)",
            ));
        }
        let params: Vec<(String, Tensor)> = self
            .hf_parameters()
            .into_iter()
            .map(|(n, p)| {
                let t = if is_conv1d_weight(&n) {
                    rewind::tape::no_grad(|| p.transpose(0, 1))?
                } else {
                    p.detach()
                };
                Ok((n, t))
            })
            .collect::<Result<_>>()?;
        let c = &self.cfg;
        let config = serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": c.vocab_size,
            "n_positions": c.n_positions,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": null,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": c.layer_norm_epsilon,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": true,
            "scale_attn_weights": true,
            "dtype": "float32",
        });
        super::peft::save_pretrained(dir, &params, &config)
    }

    /// Every parameter under transformers' name (`transformer.h.0.attn.c_attn.weight`, …);
    /// `Conv1D` weights are held transposed (see [`Self::load`]).
    pub fn hf_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("transformer.wte", self.wte.named_parameters());
        p.extend(prefixed("transformer.wpe", self.wpe.named_parameters()));
        for (i, b) in self.blocks.iter().enumerate() {
            p.extend(prefixed(
                &format!("transformer.h.{i}"),
                b.named_parameters(),
            ));
        }
        p.extend(prefixed("transformer.ln_f", self.ln_f.named_parameters()));
        p
    }

    /// Logits `[B, T, vocab]` of `ids` `[B, T]`; `attention_mask` `[B, T]` (1 real, 0 padding)
    /// hides padded keys, as transformers does. Blocks run under `seg`/`mode`/`policy`.
    pub fn logits(
        &self,
        ids: &Indices,
        attention_mask: Option<&[i64]>,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let hidden = match attention_mask {
            None => None,
            Some(m) if m.len() == b * t => Some(Tensor::from_vec(
                m.iter()
                    .map(|&v| if v == 0 { 1.0f32 } else { 0.0 })
                    .collect(),
                &[b, t],
            )?),
            Some(m) => {
                return Err(err(format!(
                    "attention mask of {} values for a [{b}, {t}] batch",
                    m.len()
                )));
            }
        };
        self.logits_hidden(ids, hidden.as_ref(), seg, mode, policy)
    }

    /// [`Self::logits`] with the padding given as `[B, T]` floats, 1.0 where a key is padding
    /// (the collators' `key_pad_mask`).
    pub fn logits_hidden(
        &self,
        ids: &Indices,
        key_pad_mask: Option<&Tensor>,
        seg: &Segmentation,
        mode: CheckpointMode,
        policy: &SavePolicy,
    ) -> Result<Tensor> {
        let (h, modules) = self.embed(ids, key_pad_mask)?;
        let h = run_blocks_with_policy(&modules, &h, seg, mode, "transformer.h", policy)?;
        self.ln_f.forward(&h)?.linear(&self.wte.weight, None)
    }

    /// Logits of the next tokens `ids` `[B, n]` after the positions `cache` holds (one cache
    /// per block), which then holds them too.
    pub fn decode(&self, ids: &Indices, cache: &mut Vec<KvCache>) -> Result<Tensor> {
        let positions = super::lm::next_positions(ids, cache, self.blocks.len(), 0)?;
        let past = cache[0].len();
        if past + ids.shape()[1] > self.cfg.n_positions {
            return Err(Error::IndexOutOfRange {
                op: "gpt2",
                index: (past + ids.shape()[1]) as i64,
                size: self.cfg.n_positions,
            });
        }
        // [n, d] position rows broadcast over the batch.
        let mut h = self.wte.forward(ids)?.add(&self.wpe.forward(&positions)?)?;
        for (blk, c) in self.blocks.iter().zip(cache.iter_mut()) {
            h = blk.forward_with(&h, None, Some(c))?;
        }
        self.ln_f.forward(&h)?.linear(&self.wte.weight, None)
    }

    /// The embedded batch and the blocks bound to its key mask: what the block chain runs on.
    pub fn embed(
        &self,
        ids: &Indices,
        key_pad_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<Rc<dyn Module>>)> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        if t > self.cfg.n_positions {
            return Err(Error::IndexOutOfRange {
                op: "gpt2",
                index: t as i64,
                size: self.cfg.n_positions,
            });
        }
        let positions = Indices::new((0..b).flat_map(|_| 0..t as i64).collect(), &[b, t])?;
        let h = self.wte.forward(ids)?.add(&self.wpe.forward(&positions)?)?;
        let mask = key_pad_mask.map(|m| m.reshape(&[b, 1, 1, t])).transpose()?;
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

    /// transformers' causal-LM loss: logits at position i predict label i + 1; labels −100
    /// are ignored; the mean over the rest.
    pub fn causal_lm_loss(logits: &Tensor, labels: &[i64]) -> Result<Tensor> {
        let (b, t, v) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
        if labels.len() != b * t {
            return Err(err(format!(
                "{} labels for a [{b}, {t}] batch",
                labels.len()
            )));
        }
        // Shift: the target of (row, i) is labels[row, i + 1]; the last position has none.
        let shifted: Vec<i64> = (0..b * t)
            .map(|k| {
                let (row, i) = (k / t, k % t);
                if i + 1 < t {
                    labels[row * t + i + 1]
                } else {
                    -100
                }
            })
            .collect();
        logits
            .reshape(&[b * t, v])?
            .cross_entropy(&Indices::new(shifted, &[b * t])?, -100)
    }
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

impl Parameters for Gpt2 {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.hf_parameters()
    }
}
