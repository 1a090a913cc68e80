//! Causal self-attention over heads, grouped-query when keys and values have fewer heads than
//! queries (Llama, Qwen2, GLM: query head h reads key/value head h / (H / KVH), each shared
//! head's gradient the sum over its group), with transformers' additive mask, fused into the
//! softmax (`ops::attention_softmax`).

use crate::checkpoint::checkpoint_name;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// softmax(q·kᵀ/√D + masks)·v for `q` `[B, H, T, D]` and `k`, `v` `[B, KVH, T, D]` (KVH
/// dividing H), future positions hidden, and keys hidden where `key_mask` (`[B, 1, 1, T]`) is
/// nonzero. Returns the context `[B, T, H·D]`; the probabilities are named `attn_probs` for
/// selective checkpointing.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    if q.rank() != 4 || k.rank() != 4 || k.shape() != v.shape() {
        return Err(Error::invalid(
            "causal_attention",
            format!(
                "needs q [B, H, T, D] and k, v [B, KVH, T, D], got {:?}, {:?}, {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    }
    let (b, h, t, dh) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let kvh = k.shape()[1];
    if kvh == 0 || h % kvh != 0 || k.shape()[0] != b || k.shape()[3] != dh {
        return Err(Error::ShapeMismatch {
            op: "causal_attention",
            lhs: q.shape().to_vec(),
            rhs: k.shape().to_vec(),
        });
    }
    // Query heads grouped by the key/value head they read: [B, KVH, G·T, D], a reshape, so
    // keys and values are never copied per query head (the products sum each group's
    // gradient).
    let g = h / kvh;
    let scores = q
        .reshape(&[b, kvh, g * t, dh])?
        .matmul(&k.transpose(-1, -2)?)?
        .reshape(&[b, h, t, t])?;
    let probs = scores.attention_softmax(1.0 / (dh as f64).sqrt(), key_mask)?;
    let probs = checkpoint_name(&probs, "attn_probs");
    probs
        .reshape(&[b, kvh, g * t, t])?
        .matmul(v)?
        .reshape(&[b, h, t, dh])?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[b, t, h * dh])
}
