//! ChatGLM's P-tuning v2 (`config.pre_seq_len`, THUDM's `PrefixEncoder`): P trained prefix
//! positions give every layer P past keys and values that each query sees before the
//! sequence; every base weight is frozen. The encoder is an embedding of P rows of
//! `layers · 2 · kv_heads · head_dim` (optionally through `Linear → tanh → Linear` when
//! `prefix_projection`), read as `[P, layers · 2, kv_heads, head_dim]`: layer i's keys are
//! slot 2i, its values 2i + 1. A dropout of 0.1 acts on them while gradients are recorded
//! (training), as THUDM's code has it.

use rewind::error::{Error, Result};
use rewind::nn::{Linear, Module, Parameters};
use rewind::tensor::Tensor;
use std::path::Path;

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("prefix", msg)
}

/// THUDM's prefix dropout.
pub const PREFIX_DROPOUT: f64 = 0.1;

/// A P-tuning v2 prefix encoder.
#[derive(Debug)]
pub struct PrefixEncoder {
    /// Prefix positions (`pre_seq_len`).
    pub tokens: usize,
    /// `[P, layers · 2 · kv_heads · head_dim]` (`prefix_encoder.embedding.weight`).
    pub embedding: Tensor,
    /// `prefix_encoder.trans.0` and `.trans.2` when `prefix_projection`.
    pub trans: Option<(Linear, Linear)>,
    /// Dropout on the keys and values while training.
    pub dropout: f64,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl PrefixEncoder {
    /// A random encoder (PyTorch's initialisations: N(0, 1) rows, uniform Linear layers).
    pub fn new(
        tokens: usize,
        projection: bool,
        hidden: usize,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<PrefixEncoder> {
        if tokens == 0 {
            return Err(err("a prefix needs at least 1 position"));
        }
        let kv = layers * 2 * kv_heads * head_dim;
        let trans = match projection {
            true => Some((
                Linear::new(kv, hidden, true)?,
                Linear::new(hidden, kv, true)?,
            )),
            false => None,
        };
        Ok(PrefixEncoder {
            tokens,
            embedding: Tensor::randn(&[tokens, kv])?.requires_grad_(true)?,
            trans,
            dropout: PREFIX_DROPOUT,
            layers,
            kv_heads,
            head_dim,
        })
    }

    /// Each layer's prefix (keys, values), `[B, kv_heads, P, head_dim]` each.
    pub fn keys_values(&self, batch: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let (p, l, g, d) = (self.tokens, self.layers, self.kv_heads, self.head_dim);
        let mut kv = self.embedding.clone();
        if let Some((a, b)) = &self.trans {
            kv = b.forward(&a.forward(&kv)?.tanh()?)?;
        }
        // The same rows for every sample: [P, kv] broadcast to [B, P, kv].
        let kv = Tensor::zeros(&[batch, 1, 1], kv.dtype())?.add(&kv)?;
        let kv = kv
            .reshape(&[batch, p, l * 2, g, d])?
            .dropout(self.dropout, rewind::tape::is_grad_enabled())?;
        (0..l)
            .map(|i| {
                let slot = |s: usize| -> Result<Tensor> {
                    kv.narrow(2, s, 1)?
                        .reshape(&[batch, p, g, d])?
                        .permute(&[0, 2, 1, 3])
                };
                Ok((slot(2 * i)?, slot(2 * i + 1)?))
            })
            .collect()
    }

    /// Writes `prefix_encoder.safetensors` (THUDM's names) and `prefix_config.json`, each file
    /// crash-safely.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("prefix", dir, e))?;
        let params: Vec<(String, Tensor)> = self
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.detach()))
            .collect();
        let bytes = rewind::weights::to_bytes(&params)?;
        rewind::atomic_file::write_atomic(
            "prefix",
            &dir.join("prefix_encoder.safetensors"),
            &bytes,
        )?;
        let config = serde_json::json!({
            "pre_seq_len": self.tokens,
            "prefix_projection": self.trans.is_some(),
        });
        let text = serde_json::to_string_pretty(&config).map_err(|e| err(e.to_string()))?;
        rewind::atomic_file::write_atomic(
            "prefix",
            &dir.join("prefix_config.json"),
            text.as_bytes(),
        )
    }

    /// Reads what [`PrefixEncoder::save`] wrote (or THUDM's tensors under the same names) into
    /// an encoder of this model's sizes.
    pub fn load(
        dir: &Path,
        hidden: usize,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<PrefixEncoder> {
        let path = dir.join("prefix_config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("prefix", &path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tokens = v["pre_seq_len"]
            .as_u64()
            .and_then(|t| usize::try_from(t).ok())
            .ok_or_else(|| err("prefix_config.json: `pre_seq_len` is missing"))?;
        let projection = v["prefix_projection"].as_bool().unwrap_or(false);
        let enc = PrefixEncoder::new(tokens, projection, hidden, layers, kv_heads, head_dim)?;
        let file = dir.join("prefix_encoder.safetensors");
        let weights = super::hf::read_file(&file)?;
        for (name, p) in enc.named_parameters() {
            let (shape, values) = weights
                .get(&name)
                .ok_or_else(|| err(format!("{} has no tensor `{name}`", file.display())))?;
            if shape.as_slice() != p.shape() {
                return Err(err(format!(
                    "`{name}` has shape {shape:?}, this model's prefix needs {:?}",
                    p.shape()
                )));
            }
            p.set_data(values.clone())?;
        }
        Ok(enc)
    }
}

impl Parameters for PrefixEncoder {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![(
            "transformer.prefix_encoder.embedding.weight".to_string(),
            self.embedding.clone(),
        )];
        if let Some((a, b)) = &self.trans {
            for (i, l) in [(0, a), (2, b)] {
                p.extend(rewind::nn::prefixed(
                    &format!("transformer.prefix_encoder.trans.{i}"),
                    l.named_parameters(),
                ));
            }
        }
        p
    }
}
