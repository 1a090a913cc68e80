//! The lab's models: the repro model (the shape of the real failure), a small decoder-only
//! transformer, and GPT-2 loaded from a transformers checkpoint. The residual MLP of the benchmarks is the engine's [`rewind::nn::ResidualMlp`].

pub mod gpt2;
pub mod lm;
pub mod repro;
pub mod transformer;

pub use gpt2::{Gpt2, Gpt2Config};

use rewind::checkpoint::checkpoint_name;
use rewind::error::Result;
use rewind::tensor::Tensor;

/// Causal self-attention of heads `q`, `k`, `v` (`[B, H, T, d/H]`), padded keys hidden by
/// `key_mask` (`[B, 1, 1, T]`, 1.0 = hidden); the context `[B, T, d]`. The softmax output is
/// named `attn_probs` for selective checkpointing.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, h, t, dh) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let scores = q
        .matmul(&k.transpose(-1, -2)?)?
        .mul_scalar(1.0 / (dh as f64).sqrt())?;
    // Hide future positions and padded keys.
    let causal: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { 1.0 } else { 0.0 })
        .collect();
    let causal = Tensor::from_vec(causal, &[1, 1, t, t])?.to_dtype(scores.dtype())?;
    let mut scores = scores.masked_fill(&causal, f64::NEG_INFINITY)?;
    if let Some(m) = key_mask {
        scores = scores.masked_fill(&m.to_dtype(scores.dtype())?, f64::NEG_INFINITY)?;
    }
    let probs = checkpoint_name(&scores.softmax(-1)?, "attn_probs");
    probs
        .matmul(v)?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[b, t, h * dh])
}
pub use lm::LmModel;
pub use repro::{ReproConfig, ReproModel};
pub use transformer::{Transformer, TransformerConfig};
