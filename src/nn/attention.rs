//! Causal self-attention over heads, grouped-query when keys and values have fewer heads than
//! queries (Llama, Qwen2, GLM: query head h reads key/value head h / (H / KVH), each shared
//! head's gradient the sum over its group), with transformers' additive mask, fused into the
//! softmax: outside autocast two fused ops over query blocks (`ops::attention`), under it
//! per-block products around `ops::attention_softmax`.

use crate::checkpoint::checkpoint_name;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::attention::QueryBlocks;
use crate::ops::autocast::autocast_dtype;
use crate::tensor::Tensor;

/// Queries per block of a long sequence (each block computes only the keys up to its last).
const QUERY_BLOCK: usize = 64;

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
    // Long sequences go in query blocks that meet only the keys they may see.
    let blocks = if t <= QUERY_BLOCK {
        vec![(t, t)]
    } else {
        // A query that sees no unpadded key (left padding) averages every key of the row, as
        // transformers' square of scores has it: those first queries form a block of their
        // own that keeps all T keys.
        let blind = match key_mask {
            None => 0,
            Some(m) => m
                .to_vec_f64()
                .chunks(t)
                .map(|row| row.iter().position(|&p| p == 0.0).unwrap_or(t))
                .max()
                .unwrap_or(0),
        };
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < t {
            let len = if start < blind {
                blind - start
            } else {
                QUERY_BLOCK.min(t - start)
            };
            blocks.push((len, if start < blind { t } else { start + len }));
            start += len;
        }
        blocks
    };
    attend(q, k, v, key_mask, 0, &blocks)
}

/// Queries `q` `[B, H, Tq, D]` at positions `offset..offset + Tq` against keys and values
/// `[B, KVH, Tk, D]` at `0..Tk`, in query blocks of `(len, keys)`: the context `[B, Tq, H·D]`.
/// f32 and f64 outside autocast run the fused ops (no block copied out); f16 or autocast the
/// per-block products and softmax, cast as autocast casts them.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    offset: usize,
    blocks: &[(usize, usize)],
) -> Result<Tensor> {
    let (b, h, tq, dh) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let scale = 1.0 / (dh as f64).sqrt();
    let fused = autocast_dtype().is_none()
        && matches!(q.dtype(), DType::F32 | DType::F64)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype();
    if fused {
        let qb = QueryBlocks::new(blocks)?;
        let probs = q.attention_probs(k, scale, key_mask, offset, &qb)?;
        let probs = checkpoint_name(&probs, "attn_probs");
        return probs.attention_context(v, h, &qb);
    }
    let ctx = match blocks {
        [(len, keys)] if *len == tq && *keys == k.shape()[2] => {
            attend_block(q, k, v, key_mask, offset)?
        }
        _ => {
            let mut parts = Vec::with_capacity(blocks.len());
            let mut start = 0;
            for &(len, keys) in blocks {
                parts.push(attend_block(
                    &q.narrow(2, start, len)?,
                    &k.narrow(2, 0, keys)?,
                    &v.narrow(2, 0, keys)?,
                    key_mask,
                    offset + start,
                )?);
                start += len;
            }
            let refs: Vec<&Tensor> = parts.iter().collect();
            Tensor::cat(&refs, 2)?
        }
    };
    ctx.permute(&[0, 2, 1, 3])?.reshape(&[b, tq, h * dh])
}

/// Queries `q` `[B, H, Tq, D]` at positions `start..start + Tq` against keys and values
/// `[B, KVH, Tk, D]` at `0..Tk`: `[B, H, Tq, D]`. Query heads are grouped by the key/value head
/// they read, `[B, KVH, G·Tq, D]`, a reshape, so keys and values are never copied per query
/// head (the products sum each group's gradient).
fn attend_block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    start: usize,
) -> Result<Tensor> {
    let (b, h, len, dh) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (kvh, keys) = (k.shape()[1], k.shape()[2]);
    let g = h / kvh;
    let scale = 1.0 / (dh as f64).sqrt();
    let scores = q
        .reshape(&[b, kvh, g * len, dh])?
        .matmul(&k.transpose(-1, -2)?)?
        .reshape(&[b, h, len, keys])?;
    let probs = scores.attention_softmax_at(scale, key_mask, start)?;
    let probs = checkpoint_name(&probs, "attn_probs");
    probs
        .reshape(&[b, kvh, g * len, keys])?
        .matmul(v)?
        .reshape(&[b, h, len, dh])
}

/// The keys and values one attention layer has seen, for decoding a token at a time: each
/// call attends the new queries to every position so far and keeps the new keys and values.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// A cache that starts with `k`, `v` (`[B, KVH, P, D]`): a P-tuning prefix every query
    /// sees, gradients flowing back into it.
    pub fn from_kv(k: Tensor, v: Tensor) -> KvCache {
        KvCache { kv: Some((k, v)) }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.shape()[2])
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `k`, `v` (`[B, KVH, n, D]`, the next n positions) and returns the context
    /// `[B, n, H·D]` of `q` (`[B, H, n, D]`): each new query sees every earlier position and
    /// the new ones up to its own, as [`causal_attention`] over the whole sequence would.
    pub fn attend(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        self.attend_masked(q, k, v, None)
    }

    /// [`KvCache::attend`] with keys hidden where `key_mask` (`B·(past + n)` values in key
    /// order, nonzero = hidden) is set: a padded batch after a prefix.
    pub fn attend_masked(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        if q.rank() != 4 || k.rank() != 4 || k.shape() != v.shape() || q.shape()[2] != k.shape()[2]
        {
            return Err(Error::invalid(
                "kv_cache",
                format!(
                    "needs q [B, H, n, D] and k, v [B, KVH, n, D], got {:?}, {:?}, {:?}",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            ));
        }
        let past = self.len();
        let (k, v) = match self.kv.take() {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
        };
        let (b, h, n, dh) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
        let kvh = k.shape()[1];
        if kvh == 0 || h % kvh != 0 || k.shape()[0] != b || k.shape()[3] != dh {
            return Err(Error::ShapeMismatch {
                op: "kv_cache",
                lhs: q.shape().to_vec(),
                rhs: k.shape().to_vec(),
            });
        }
        let ctx = attend(q, &k, &v, key_mask, past, &[(n, past + n)])?;
        self.kv = Some((k, v));
        Ok(ctx)
    }
}
