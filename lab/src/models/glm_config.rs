//! ChatGLM3's and GLM's `config.json` (THUDM's keys or transformers'), the names each gives the
//! network's tensors, and the variants rewind refuses by name.

use rewind::error::{Error, Result};
use rewind::ops::rope::{Rope, RopeLayout};

pub(super) fn err(msg: impl Into<String>) -> Error {
    Error::invalid("glm", msg)
}

/// Which names a checkpoint gives the network's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// THUDM's ChatGLM3 (`transformer.encoder.layers.{i}.self_attention.query_key_value`).
    ChatGlm,
    /// transformers' GLM (`model.layers.{i}.self_attn.q_proj`).
    Glm,
}

/// ChatGLM3's projections, in block order (PEFT's `target_modules` names).
pub const CHATGLM_TARGETS: [&str; 4] =
    ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"];

/// GLM's projections, in block order.
pub const GLM_TARGETS: [&str; 6] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_up_proj",
    "down_proj",
];

impl Naming {
    /// Each projection's path inside a block, with its target name.
    pub(super) fn projections(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Naming::ChatGlm => &[
                ("self_attention.query_key_value", "query_key_value"),
                ("self_attention.dense", "dense"),
                ("mlp.dense_h_to_4h", "dense_h_to_4h"),
                ("mlp.dense_4h_to_h", "dense_4h_to_h"),
            ],
            Naming::Glm => &[
                ("self_attn.q_proj", "q_proj"),
                ("self_attn.k_proj", "k_proj"),
                ("self_attn.v_proj", "v_proj"),
                ("self_attn.o_proj", "o_proj"),
                ("mlp.gate_up_proj", "gate_up_proj"),
                ("mlp.down_proj", "down_proj"),
            ],
        }
    }

    pub(super) fn targets(self) -> &'static [&'static str] {
        match self {
            Naming::ChatGlm => &CHATGLM_TARGETS,
            Naming::Glm => &GLM_TARGETS,
        }
    }

    /// Names of the embedding, the layers, the final norm and the head.
    pub(super) fn outer(self) -> [&'static str; 4] {
        match self {
            Naming::ChatGlm => [
                "transformer.embedding.word_embeddings",
                "transformer.encoder.layers",
                "transformer.encoder.final_layernorm.weight",
                "transformer.output_layer.weight",
            ],
            Naming::Glm => [
                "model.embed_tokens",
                "model.layers",
                "model.norm.weight",
                "lm_head.weight",
            ],
        }
    }

    /// Checkpoint tensors the network does not use (ChatGLM3's rotary buffer).
    pub(super) fn ignored(self) -> &'static [&'static str] {
        match self {
            Naming::ChatGlm => &["transformer.rotary_pos_emb.inv_freq"],
            Naming::Glm => &[],
        }
    }
}

/// The sizes and choices of a ChatGLM3 or GLM `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlmConfig {
    /// Whose names the checkpoint uses.
    pub naming: Naming,
    /// Width.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (ChatGLM3's `multi_query_group_num`).
    pub kv_heads: usize,
    /// Dims per head (ChatGLM3's `kv_channels`).
    pub head_dim: usize,
    /// The MLP's hidden width (ChatGLM3's `ffn_hidden_size`).
    pub intermediate: usize,
    /// RMSNorm's ε.
    pub eps: f64,
    /// Token ids (ChatGLM3's `padded_vocab_size`).
    pub vocab: usize,
    /// Positions (ChatGLM3's `seq_length`).
    pub positions: usize,
    /// Biases on q, k, v.
    pub qkv_bias: bool,
    /// The rotary embedding (interleaved, on the first half of each head).
    pub rope: Rope,
    /// The parsed `config.json`, written back by `save_pretrained`.
    pub json: serde_json::Value,
}

fn count(v: &serde_json::Value, key: &str) -> Result<usize> {
    v[key]
        .as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| err(format!("config.json: `{key}` is missing or not a count")))
}

/// `key` as a flag, `default` when absent.
fn flag(v: &serde_json::Value, key: &str, default: bool) -> bool {
    v[key].as_bool().unwrap_or(default)
}

impl GlmConfig {
    /// Parses a `config.json` of `model_type` `chatglm` (THUDM's keys, its defaults where
    /// optional) or `glm` (transformers' keys). A variant rewind does not build (LayerNorm,
    /// post-norm residuals, linear biases, another rope, a P-tuning prefix, a tied head) is an
    /// error naming its key.
    pub fn from_value(v: serde_json::Value) -> Result<GlmConfig> {
        match v["model_type"].as_str() {
            Some("chatglm") => GlmConfig::chatglm(v),
            Some("glm") => GlmConfig::glm(v),
            other => Err(err(format!(
                "model_type {other:?} is not chatglm or glm (glm4 adds norms after each sublayer: a different network)"
            ))),
        }
    }

    fn chatglm(v: serde_json::Value) -> Result<GlmConfig> {
        let unsupported = |what: &str| {
            Err(err(format!(
                "config.json: {what} is not supported (ChatGLM2/3 checkpoints have it off)"
            )))
        };
        if !v["position_encoding_2d"].is_null() || !v["inner_hidden_size"].is_null() {
            return Err(err(
                "config.json: a ChatGLM-6B (first version) config (`position_encoding_2d`, `inner_hidden_size`: 2D positions, LayerNorm, GELU) is not supported; ChatGLM2-6B and ChatGLM3-6B are",
            ));
        }
        if !flag(&v, "rmsnorm", true) {
            return unsupported("`rmsnorm: false` (LayerNorm)");
        }
        if flag(&v, "apply_residual_connection_post_layernorm", false) {
            return unsupported("`apply_residual_connection_post_layernorm`");
        }
        if !flag(&v, "post_layer_norm", true) {
            return unsupported("`post_layer_norm: false`");
        }
        if flag(&v, "add_bias_linear", false) {
            return unsupported("`add_bias_linear`");
        }
        if !flag(&v, "original_rope", true) {
            return unsupported("`original_rope: false`");
        }
        if flag(&v, "tie_word_embeddings", false) {
            return unsupported("`tie_word_embeddings`");
        }
        if !v["pre_seq_len"].is_null() {
            return Err(err(
                "config.json: `pre_seq_len` is set (a P-tuning v2 checkpoint): load the base model and its prefix encoder separately",
            ));
        }
        let (hidden, heads) = (count(&v, "hidden_size")?, count(&v, "num_attention_heads")?);
        let head_dim = match v["kv_channels"].is_null() {
            true => hidden / heads.max(1),
            false => count(&v, "kv_channels")?,
        };
        let kv_heads = match flag(&v, "multi_query_attention", false) {
            true => count(&v, "multi_query_group_num")?,
            false => heads,
        };
        let ratio = v["rope_ratio"].as_f64().unwrap_or(1.0);
        check_heads(heads, kv_heads, head_dim)?;
        Ok(GlmConfig {
            naming: Naming::ChatGlm,
            hidden,
            layers: count(&v, "num_layers")?,
            heads,
            kv_heads,
            head_dim,
            intermediate: count(&v, "ffn_hidden_size")?,
            eps: v["layernorm_epsilon"].as_f64().unwrap_or(1e-5),
            vocab: count(&v, "padded_vocab_size")?,
            positions: count(&v, "seq_length")?,
            qkv_bias: flag(&v, "add_qkv_bias", false),
            // RotaryEmbedding(kv_channels // 2): base 10000·rope_ratio over half the head.
            rope: Rope::new(10000.0 * ratio, head_dim / 2, RopeLayout::Interleaved)?,
            json: v,
        })
    }

    fn glm(v: serde_json::Value) -> Result<GlmConfig> {
        if flag(&v, "tie_word_embeddings", false) {
            return Err(err("config.json: `tie_word_embeddings` is not supported"));
        }
        let (hidden, heads) = (count(&v, "hidden_size")?, count(&v, "num_attention_heads")?);
        let kv_heads = match v["num_key_value_heads"].is_null() {
            true => heads,
            false => count(&v, "num_key_value_heads")?,
        };
        let head_dim = match v["head_dim"].is_null() {
            true => hidden / heads.max(1),
            false => count(&v, "head_dim")?,
        };
        check_heads(heads, kv_heads, head_dim)?;
        // GlmConfig's default partial_rotary_factor is 0.5.
        let mut rope_json = v.clone();
        if rope_json["partial_rotary_factor"].is_null()
            && rope_json["rope_parameters"]["partial_rotary_factor"].is_null()
        {
            rope_json["partial_rotary_factor"] = 0.5.into();
        }
        let rope = super::rope_config::rope(&rope_json, head_dim, RopeLayout::Interleaved)?;
        Ok(GlmConfig {
            naming: Naming::Glm,
            hidden,
            layers: count(&v, "num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            intermediate: count(&v, "intermediate_size")?,
            eps: v["rms_norm_eps"].as_f64().unwrap_or(1.5625e-7),
            vocab: count(&v, "vocab_size")?,
            positions: count(&v, "max_position_embeddings")?,
            qkv_bias: flag(&v, "attention_bias", true),
            rope,
            json: v,
        })
    }
}

fn check_heads(heads: usize, kv_heads: usize, head_dim: usize) -> Result<()> {
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || !head_dim.is_multiple_of(4)
    {
        return Err(err(format!(
            "config.json: {heads} heads over {kv_heads} KV heads of {head_dim} dims"
        )));
    }
    Ok(())
}
