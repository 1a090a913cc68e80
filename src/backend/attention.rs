//! What attention's kernels are told, the same for every backend: how queries split into
//! blocks, the sizes, which keys each query may not see.

use crate::dtype::DType;
use crate::error::{Error, Result};
use std::rc::Rc;

/// The lowest finite value of `dtype` (transformers' `torch.finfo(dtype).min`).
pub(crate) fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => half::bf16::MIN.to_f64(),
        DType::F32 => f64::from(f32::MIN),
        DType::F64 => f64::MIN,
    }
}

/// Which keys a query may not see: those after it, and padded ones.
pub(crate) struct KeyMask {
    /// `[B·stride]`: key padded.
    padded: Option<Vec<bool>>,
    /// Keys per batch row in `padded`.
    stride: usize,
    /// The position of query 0.
    pub(crate) offset: usize,
}

impl KeyMask {
    /// Keys hidden where `padded[b·stride + j]` is set (none without it), queries starting at
    /// position `offset`.
    pub(crate) fn new(padded: Option<Vec<bool>>, stride: usize, offset: usize) -> KeyMask {
        KeyMask {
            padded,
            stride,
            offset,
        }
    }

    /// Whether query position `i` of batch row `b` may not see key `j`.
    #[inline(always)]
    pub(crate) fn hides(&self, b: usize, i: usize, j: usize) -> bool {
        j > i || self.padded.as_ref().is_some_and(|p| p[b * self.stride + j])
    }
}

/// Scores `[B, H, Tq, T]` as rows: which batch row and query position row r is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    pub heads: usize,
    pub tq: usize,
    pub t: usize,
}

impl Rows {
    pub(crate) fn row(&self, r: usize, mask: &KeyMask) -> (usize, usize) {
        (r / (self.heads * self.tq), mask.offset + r % self.tq)
    }
}

/// One block: queries `start..start + len` against keys `0..keys`, its probabilities at `at`
/// in each head's packed row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub start: usize,
    pub len: usize,
    pub keys: usize,
    pub at: usize,
}

/// How the queries split into blocks.
#[derive(Debug)]
pub(crate) struct QueryBlocks {
    pub(crate) spans: Vec<Span>,
    /// Probabilities per head (P).
    pub(crate) packed: usize,
    pub(crate) queries: usize,
    /// The most keys a block reads.
    pub(crate) keys: usize,
}

impl QueryBlocks {
    /// Blocks of `(len, keys)`, covering the queries in order.
    pub(crate) fn new(blocks: &[(usize, usize)]) -> Result<Rc<QueryBlocks>> {
        let overflow = Error::OutOfMemory {
            op: "attention_probs",
            bytes: usize::MAX,
        };
        let (mut spans, mut at, mut start, mut most) = (Vec::new(), 0usize, 0usize, 0);
        for &(len, keys) in blocks {
            spans.push(Span {
                start,
                len,
                keys,
                at,
            });
            at = len
                .checked_mul(keys)
                .and_then(|n| n.checked_add(at))
                .ok_or_else(|| overflow.clone())?;
            start += len;
            most = most.max(keys);
        }
        Ok(Rc::new(QueryBlocks {
            spans,
            packed: at,
            queries: start,
            keys: most,
        }))
    }
}

/// The sizes: batch, query heads, key/value heads, queries, keys, dims per head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) kvh: usize,
    pub(crate) tq: usize,
    pub(crate) tk: usize,
    pub(crate) d: usize,
}

impl Dims {
    /// The key/value rows `0..keys` that query head `bh` (batch row · H + head) reads.
    pub(crate) fn kv<'a, E>(&self, kv: &'a [E], bh: usize, keys: usize) -> &'a [E] {
        let (b, h) = (bh / self.h, bh % self.h);
        let head = b * self.kvh + h / (self.h / self.kvh);
        &kv[head * self.tk * self.d..][..keys * self.d]
    }
}
