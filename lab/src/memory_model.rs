//! `rewind memory --model DIR`: what fine-tuning a checkpoint will take, from its `config.json`
//! alone, before any weights are downloaded — parameters, gradients, optimizer state and the
//! activations a step keeps, for full fine-tuning, LoRA and P-tuning v2, under each checkpoint
//! plan. The activations follow what rewind's ops save in a Llama/Qwen2/GLM/ChatGLM3 layer
//! (f32; queries in blocks of 64 meeting only the keys they may see), fed to the same peak
//! predictor the budget planner uses.

use crate::models::lm::Checkpoint;
use crate::models::{GlmConfig, LlamaConfig};
use rewind::checkpoint::{BlockCosts, Plan, Segmentation, plan};
use rewind::error::{Error, Result};

/// The sizes that decide the bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arch {
    /// Width.
    pub d: usize,
    /// MLP width.
    pub ffn: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Dims per head.
    pub head_dim: usize,
    /// Layers.
    pub layers: usize,
    /// Token ids.
    pub vocab: usize,
    /// Biases on q, k, v.
    pub qkv_bias: bool,
    /// The head shares the embedding.
    pub tied: bool,
}

impl Arch {
    /// The sizes of a Llama, Qwen2, GLM or ChatGLM3 `config.json`.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Arch> {
        match ckpt.family.model_type {
            "llama" | "qwen2" => {
                let c = LlamaConfig::from_value(ckpt.config.clone())?;
                Ok(Arch {
                    d: c.hidden,
                    ffn: c.intermediate,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    layers: c.layers,
                    vocab: c.vocab,
                    qkv_bias: c.qkv_bias,
                    tied: c.tied,
                })
            }
            "chatglm" | "glm" => {
                let c = GlmConfig::from_value(ckpt.config.clone())?;
                Ok(Arch {
                    d: c.hidden,
                    ffn: c.intermediate,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    layers: c.layers,
                    vocab: c.vocab,
                    qkv_bias: c.qkv_bias,
                    tied: false,
                })
            }
            other => Err(Error::invalid(
                "memory",
                format!(
                    "--model of model_type {other}: the estimate covers llama, qwen2, glm and chatglm"
                ),
            )),
        }
    }

    fn q(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Parameters: embedding, head (untied), per layer two norms, q/k/v (+ biases), o,
    /// gate/up, down; the final norm.
    pub fn params(&self) -> usize {
        let (d, f) = (self.d, self.ffn);
        let qkv = self.q() + 2 * self.kv();
        let layer =
            2 * d + d * qkv + if self.qkv_bias { qkv } else { 0 } + self.q() * d + 3 * d * f;
        self.vocab * d * if self.tied { 1 } else { 2 } + self.layers * layer + d
    }
}

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Every weight.
    Full,
    /// LoRA of this rank on the attention's q/k/v input projection(s) (PEFT's default
    /// targets: ChatGLM3's query_key_value, Llama's q_proj and v_proj).
    Lora(usize),
    /// P-tuning v2 with this many prefix positions.
    Prefix(usize),
}

/// The optimizer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optim {
    /// fp32 AdamW: two f32 moments per parameter.
    AdamW,
    /// Blockwise 8-bit AdamW: two u8 moments per parameter and an f32 scale per block of 256.
    AdamW8bit,
}

/// The bytes of one fine-tuning setup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// f32 master weights (the prefix encoder included).
    pub params: usize,
    /// Gradients of what trains.
    pub grads: usize,
    /// Optimizer state.
    pub optimizer: usize,
    /// Peak saved activations of a step.
    pub activations: usize,
}

impl Estimate {
    /// Everything held at the peak.
    pub fn total(&self) -> usize {
        self.params + self.grads + self.optimizer + self.activations
    }
}

/// The element counts of the tensors `method` trains on `a` (LoRA as PEFT's default targets
/// put it: ChatGLM3's fused query_key_value, else q_proj and v_proj).
pub fn trainable_tensors(a: &Arch, method: Method, fused_qkv: bool) -> Vec<usize> {
    let (d, f, q, kv) = (a.d, a.ffn, a.q(), a.kv());
    match method {
        Method::Full => {
            let mut t = vec![a.vocab * d];
            // Norms, o, the MLP (gate and up fused as ChatGLM3 has them, or apart), down.
            let mut layer = vec![d, d, q * d, f * d];
            match fused_qkv {
                true => layer.push(2 * f * d),
                false => layer.extend([f * d, f * d]),
            }
            match fused_qkv {
                true => layer.push((q + 2 * kv) * d),
                false => layer.extend([q * d, kv * d, kv * d]),
            }
            if a.qkv_bias {
                match fused_qkv {
                    true => layer.push(q + 2 * kv),
                    false => layer.extend([q, kv, kv]),
                }
            }
            for _ in 0..a.layers {
                t.extend(&layer);
            }
            if !a.tied {
                t.push(a.vocab * d);
            }
            t.push(d);
            t
        }
        Method::Lora(r) => {
            let layer = match fused_qkv {
                true => vec![r * d, (q + 2 * kv) * r],
                false => vec![r * d, q * r, r * d, kv * r],
            };
            (0..a.layers).flat_map(|_| layer.clone()).collect()
        }
        Method::Prefix(p) => vec![p * a.layers * 2 * kv],
    }
}

/// Optimizer state bytes of `tensors`: fp32 AdamW's two moments, or 8-bit AdamW's two u8
/// moments with an f32 absmax per block of 256 (tensors under 4096 elements keep fp32
/// moments, as bitsandbytes' `min_8bit_size`).
pub fn optimizer_bytes(tensors: &[usize], optim: Optim) -> usize {
    tensors
        .iter()
        .map(|&n| match optim {
            Optim::AdamW8bit if n >= rewind::optim::MIN_8BIT_SIZE => {
                2 * n + 8 * n.div_ceil(rewind::optim::BLOCK)
            }
            _ => 8 * n,
        })
        .sum()
}

/// Each rank's optimizer state bytes when `ranks` processes train `tensors` (in parameter
/// order): the whole state on every rank, or with `zero` (ZeRO-1) each rank's shard, cut
/// where the trainer cuts it (1/N of the flat order, give or take a 256-element block), each
/// slice keeping its whole tensor's kind of state.
pub fn optimizer_bytes_per_rank(
    tensors: &[usize],
    optim: Optim,
    ranks: usize,
    zero: bool,
) -> Vec<usize> {
    if !zero {
        return vec![optimizer_bytes(tensors, optim); ranks.max(1)];
    }
    let shards = crate::dist::Shards::cut(tensors, ranks);
    (0..shards.ranks())
        .map(|r| {
            shards
                .pieces(r)
                .iter()
                .map(|p| match optim {
                    Optim::AdamW8bit if tensors[p.param] >= rewind::optim::MIN_8BIT_SIZE => {
                        2 * p.len + 8 * p.len.div_ceil(rewind::optim::BLOCK)
                    }
                    _ => 8 * p.len,
                })
                .sum()
        })
        .collect()
}

/// Bytes one layer saves for `b` samples of `t` tokens (right-padded: no blind queries),
/// and whether its input requires grad.
fn layer_bytes(
    a: &Arch,
    fused: bool,
    method: Method,
    b: usize,
    t: usize,
    input_grad: bool,
) -> usize {
    let (d, f, q, kv, h) = (a.d, a.ffn, a.q(), a.kv(), a.heads);
    // Per token (f32): the norms' inputs (with their 1/rms) where gradients pass; each
    // projection input a weight gradient or LoRA needs; the query copy, SiLU's input and output,
    // `up`; with LoRA, A·x.
    let mut per_token = (d + 1) * 2 + q + 3 * f;
    if !input_grad {
        per_token -= d + 1;
    }
    per_token += match method {
        Method::Full => d + q + d + f,
        // A·x of each LoRA: one for a fused query_key_value, q and v apart.
        Method::Lora(r) => d + r * if fused { 1 } else { 2 },
        Method::Prefix(_) => 0,
    };
    // Attention: query blocks of 64 meet keys 0..end of block: probabilities (H per pair plus
    // the mask's bits), and the keys and values, read in place by every block.
    let prefix = match method {
        Method::Prefix(p) => p,
        _ => 0,
    };
    let mut pairs = 0usize;
    let mut start = 0;
    while start < t {
        let len = 64.min(t - start);
        pairs += len * (if t <= 64 { t } else { start + len } + prefix);
        start += len;
    }
    let attention = (4 * h) * pairs + pairs / 2 + 4 * 2 * kv * (t + prefix);
    16 * t + b * (4 * per_token * t + attention)
}

/// The step's peak of saved activations under `seg`: the layers as the planner predicts
/// them, plus the head (final norm, and the logits' softmax for the loss).
fn activations(
    a: &Arch,
    fused: bool,
    method: Method,
    b: usize,
    t: usize,
    seg: &Segmentation,
) -> usize {
    let stored: Vec<usize> = (0..a.layers)
        .map(|i| {
            let input_grad = method == Method::Full || i > 0 || matches!(method, Method::Prefix(_));
            layer_bytes(a, fused, method, b, t, input_grad)
        })
        .collect();
    let boundary = vec![4 * b * t * a.d; a.layers];
    // What the forward leaves held when it reaches the head; the head's saves (the final
    // norm's input, the head's input when it trains, the logits' softmax) are freed first in
    // backward, before any segment is recomputed.
    let held: usize = seg
        .segments
        .iter()
        .map(|s| match s.checkpointed {
            true => boundary[s.blocks.start],
            false => stored[s.blocks.clone()].iter().sum(),
        })
        .sum();
    let head = 4 * b * t * ((a.d + 1) + a.vocab + if method == Method::Full { a.d } else { 0 });
    let costs = BlockCosts { stored, boundary };
    seg.predicted_peak(&costs).max(held + head)
}

/// The estimate for `method` with `optim` under checkpoint `seg_plan` (`None`: everything
/// stored), `b` samples of `t` tokens; `fused_qkv` for ChatGLM3's one query_key_value.
pub fn estimate(
    a: &Arch,
    fused_qkv: bool,
    method: Method,
    optim: Optim,
    seg_plan: Option<Plan>,
    b: usize,
    t: usize,
) -> Result<Estimate> {
    let tensors = trainable_tensors(a, method, fused_qkv);
    let n: usize = tensors.iter().sum();
    let extra = match method {
        Method::Full => 0,
        _ => n,
    };
    let seg = match seg_plan {
        None => Segmentation::store_all(a.layers),
        Some(p) => plan::segment(p, a.layers, None)?,
    };
    Ok(Estimate {
        params: 4 * (a.params() + extra),
        grads: 4 * n,
        optimizer: optimizer_bytes(&tensors, optim),
        activations: activations(a, fused_qkv, method, b, t, &seg),
    })
}

/// The table `rewind memory --model` prints: each method under fp32 and 8-bit AdamW, stored,
/// every layer checkpointed and √L segments, in GiB.
pub fn table(
    ckpt: &Checkpoint,
    b: usize,
    t: usize,
    lora_rank: usize,
    prefix: usize,
) -> Result<String> {
    table_per_rank(
        ckpt,
        b,
        t,
        lora_rank,
        prefix,
        Ranks {
            ranks: 1,
            zero: false,
        },
    )
}

/// Data parallelism for [`table_per_rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranks {
    /// Processes.
    pub ranks: usize,
    /// ZeRO-1: each keeps its shard of the optimizer state.
    pub zero: bool,
}

/// [`table`] for one of `par.ranks` processes, each taking `b` samples: parameters,
/// gradients and activations are every rank's own; the optimizer column is the largest
/// rank's share under ZeRO-1, the whole state otherwise.
pub fn table_per_rank(
    ckpt: &Checkpoint,
    b: usize,
    t: usize,
    lora_rank: usize,
    prefix: usize,
    par: Ranks,
) -> Result<String> {
    let a = Arch::from_checkpoint(ckpt)?;
    let fused = ckpt.family.model_type == "chatglm";
    let gib = |x: usize| x as f64 / (1u64 << 30) as f64;
    let mut out = format!(
        "{} ({}): {:.2} B parameters; batch {b} × {t} tokens, f32 master weights\n",
        ckpt.dir.display(),
        ckpt.family.model_type,
        a.params() as f64 / 1e9
    );
    if par.ranks > 1 {
        out += &format!(
            "per rank of {}, ZeRO stage {}: {}\n",
            par.ranks,
            u8::from(par.zero),
            if par.zero {
                "parameters, gradients and activations whole on every rank; optimizer state 1/N (the largest shard shown)"
            } else {
                "every rank holds everything"
            }
        );
    }
    out +=
        "| method | optimizer | checkpoint | params | grads | optimizer | activations | total |\n";
    out += "|---|---|---|---:|---:|---:|---:|---:|\n";
    let mut methods = vec![
        ("full fine-tuning".to_string(), Method::Full),
        (
            format!(
                "LoRA r {lora_rank} ({})",
                ckpt.family.default_lora_targets.join(", ")
            ),
            Method::Lora(lora_rank),
        ),
    ];
    if matches!(ckpt.family.model_type, "chatglm" | "glm") {
        methods.push((
            format!("P-tuning v2, {prefix} prefix"),
            Method::Prefix(prefix),
        ));
    }
    for (name, method) in &methods {
        for (oname, optim) in [("AdamW", Optim::AdamW), ("8-bit AdamW", Optim::AdamW8bit)] {
            for (pname, p) in [
                ("none", None),
                ("every layer", Some(Plan::EveryBlock)),
                ("√L", Some(Plan::Sqrt)),
            ] {
                let mut e = estimate(&a, fused, *method, optim, p, b, t)?;
                let tensors = trainable_tensors(&a, *method, fused);
                e.optimizer = optimizer_bytes_per_rank(&tensors, optim, par.ranks, par.zero)
                    .into_iter()
                    .max()
                    .unwrap_or(0);
                out += &format!(
                    "| {name} | {oname} | {pname} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    gib(e.params),
                    gib(e.grads),
                    gib(e.optimizer),
                    gib(e.activations),
                    gib(e.total())
                );
            }
        }
    }
    Ok(out)
}
