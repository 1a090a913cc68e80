//! Causal self-attention over heads, grouped-query when keys and values have fewer heads than
//! queries (Llama, Qwen2, GLM: query head h reads key/value head h / (H / KVH), each shared
//! head's gradient the sum over its group), with transformers' additive mask.

use crate::checkpoint::checkpoint_name;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The lowest finite value of `dtype` (transformers' `torch.finfo(dtype).min`): what masked
/// scores become, so that a query that sees no key (a left-padded position) gets a uniform
/// average rather than NaN.
fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::F32 => f64::from(f32::MIN),
        DType::F64 => f64::MIN,
    }
}

/// The additive mask `[B or 1, 1, T, T]`: 0 where query i may see key j (j ≤ i, key not
/// hidden), the dtype's lowest finite value elsewhere — added, as transformers adds it, so the
/// scores keep their gradient path (a query that sees no key gets transformers' gradient too).
fn additive_mask(b: usize, t: usize, key_mask: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
    let hide = lowest(dtype);
    let keys = match key_mask {
        Some(m) if m.numel() == b * t => m.to_vec_f64(),
        Some(m) => {
            return Err(Error::ShapeMismatch {
                op: "causal_attention",
                lhs: vec![b, 1, 1, t],
                rhs: m.shape().to_vec(),
            });
        }
        None => vec![0.0; t],
    };
    let rows = keys.len() / t;
    let mask: Vec<f64> = (0..rows * t * t)
        .map(|e| {
            let (r, i, j) = (e / (t * t), e / t % t, e % t);
            if j > i || keys[r * t + j] != 0.0 {
                hide
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(mask, &[rows, 1, t, t])?.to_dtype(dtype)
}

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
    let (k, v) = (k.repeat_heads(h / kvh)?, v.repeat_heads(h / kvh)?);
    let scores = q
        .matmul(&k.transpose(-1, -2)?)?
        .mul_scalar(1.0 / (dh as f64).sqrt())?;
    let scores = scores.add(&additive_mask(b, t, key_mask, scores.dtype())?)?;
    let probs = checkpoint_name(&scores.softmax(-1)?, "attn_probs");
    probs
        .matmul(&v)?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[b, t, h * dh])
}
