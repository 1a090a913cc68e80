//! Attention over blocks of queries as two fused ops, so no block of q, k or v is copied out
//! and no square of scores is built. [`Tensor::attention_probs`]: each block's scores q·kᵀ
//! straight from q and k against the keys it may see, scaled, masked and softmaxed in place
//! (rounded as the unfused chain, like `attention_softmax`), packed per head as `[B, H, P]`
//! (P = Σ len·keys over the blocks). [`Tensor::attention_context`]: those times v, written as
//! the context `[B, Tq, H·D]`. Query head h reads key/value head h / (H / KVH).
//! With dC the context's gradient: dP = dC·vᵀ, dv = Σ Pᵀ·dC; dS = scale·P ⊙ (dP − Σ dP⊙P),
//! dq = dS·k, dk = Σ dSᵀ·q (each key/value head summing its query heads' blocks in order).
//! Saves: probs: q and k (each for the other's gradient) and the output; context: the
//! probabilities and v.

use crate::autograd::{Backward, Grads};
pub(crate) use crate::backend::QueryBlocks;
use crate::backend::{BackendStorage, Dims};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::attention_softmax::key_mask_of;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::OpSpec;
use crate::tensor::Tensor;
use smallvec::smallvec;
use std::rc::Rc;

static ATTENTION_PROBS: OpSpec = OpSpec::new("attention_probs", "Softmax").dot();
static ATTENTION_CONTEXT: OpSpec = OpSpec::new("attention_context", "Bmm").dot();

impl Tensor {
    /// The probabilities of attention over query blocks, packed `[B, H, P]`: for queries
    /// `self` `[B, H, Tq, D]` at positions `offset..offset + Tq` and keys `k` `[B, KVH, Tk, D]`
    /// at `0..Tk`, softmax(q·kᵀ·scale + mask) of each block's queries against its keys, future
    /// keys hidden and keys hidden where `key_mask` (`B·T` values, T ≥ the keys read,
    /// nonzero = padded) is set. f32 and f64.
    pub(crate) fn attention_probs(
        &self,
        k: &Tensor,
        scale: f64,
        key_mask: Option<&Tensor>,
        offset: usize,
        blocks: &Rc<QueryBlocks>,
    ) -> Result<Tensor> {
        let n = dims("attention_probs", self, k, blocks)?;
        let mask = key_mask_of("attention_probs", key_mask, n.b, blocks.keys, offset)?;
        let qb = blocks.clone();
        let shape = smallvec![n.b, n.h, qb.packed];
        crate::shape::checked_numel("attention_probs", &shape)?;
        dispatch::apply(
            &ATTENTION_PROBS,
            &[self, k],
            |x| {
                let (q, k) = (x[0].clone(), x[1].clone());
                let qb = qb.clone();
                Ok(Forward::Product {
                    shape,
                    dtype: q.dtype(),
                    compute: Box::new(move || {
                        q.data().attention_probs(&k.data(), n, &qb, &mask, scale)
                    }),
                })
            },
            |x, y| ProbsBackward {
                q: x[1].requires_grad().then(|| save(x[0])),
                k: x[0].requires_grad().then(|| save(x[1])),
                y: save(y),
                n,
                qb: blocks.clone(),
                scale,
            },
        )
    }

    /// The context `[B, Tq, H·D]` of packed probabilities `self` `[B, H, P]` (from
    /// [`Tensor::attention_probs`] over the same `blocks`) and values `v` `[B, KVH, Tk, D]`.
    pub(crate) fn attention_context(
        &self,
        v: &Tensor,
        heads: usize,
        blocks: &Rc<QueryBlocks>,
    ) -> Result<Tensor> {
        let s = v.shape();
        let bad = || Error::ShapeMismatch {
            op: "attention_context",
            lhs: self.shape().to_vec(),
            rhs: s.to_vec(),
        };
        if v.rank() != 4 || self.shape() != [s[0], heads, blocks.packed] {
            return Err(bad());
        }
        let n = Dims {
            b: s[0],
            h: heads,
            kvh: s[1],
            tq: blocks.queries,
            tk: s[2],
            d: s[3],
        };
        if n.kvh == 0
            || !n.h.is_multiple_of(n.kvh)
            || blocks.keys > n.tk
            || self.dtype() != v.dtype()
        {
            return Err(bad());
        }
        let qb = blocks.clone();
        let shape = smallvec![n.b, n.tq, n.h * n.d];
        crate::shape::checked_numel("attention_context", &shape)?;
        dispatch::apply(
            &ATTENTION_CONTEXT,
            &[self, v],
            |x| {
                let (p, v) = (x[0].clone(), x[1].clone());
                let qb = qb.clone();
                Ok(Forward::Product {
                    shape,
                    dtype: p.dtype(),
                    compute: Box::new(move || p.data().attention_context(&v.data(), n, &qb)),
                })
            },
            |x, _| ContextBackward {
                p: x[1].requires_grad().then(|| save(x[0])),
                v: x[0].requires_grad().then(|| save(x[1])),
                n,
                qb: blocks.clone(),
            },
        )
    }
}

/// Checks q `[B, H, Tq, D]` and k `[B, KVH, Tk, D]` against the blocks: f32 or f64 alike,
/// KVH dividing H, the blocks covering Tq and reading at most Tk keys.
fn dims(op: &'static str, q: &Tensor, k: &Tensor, qb: &QueryBlocks) -> Result<Dims> {
    let (a, s) = (q.shape(), k.shape());
    if q.rank() != 4 || k.rank() != 4 {
        return Err(Error::invalid(
            op,
            format!("needs q [B, H, Tq, D] and k [B, KVH, Tk, D], got {a:?}, {s:?}"),
        ));
    }
    let n = Dims {
        b: a[0],
        h: a[1],
        kvh: s[1],
        tq: a[2],
        tk: s[2],
        d: a[3],
    };
    if s[0] != n.b
        || s[3] != n.d
        || n.kvh == 0
        || !n.h.is_multiple_of(n.kvh)
        || qb.queries != n.tq
        || qb.keys > n.tk
    {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.to_vec(),
            rhs: s.to_vec(),
        });
    }
    if q.dtype() != k.dtype() || !matches!(q.dtype(), DType::F32 | DType::F64) {
        return Err(Error::DTypeMismatch {
            op,
            lhs: q.dtype(),
            rhs: k.dtype(),
        });
    }
    Ok(n)
}

struct ProbsBackward {
    /// Saved when k needs a gradient.
    q: Option<Tensor>,
    /// Saved when q needs a gradient.
    k: Option<Tensor>,
    y: Tensor,
    n: Dims,
    qb: Rc<QueryBlocks>,
    scale: f64,
}

impl Backward for ProbsBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let (n, qb) = (self.n, &*self.qb);
        let q = self.q.as_ref().filter(|_| needs[1]).map(|t| t.data());
        let k = self.k.as_ref().filter(|_| needs[0]).map(|t| t.data());
        let (dq, dk) = g.data().attention_probs_grad(
            &self.y.data(),
            (q.as_deref(), k.as_deref()),
            n,
            qb,
            self.scale,
        )?;
        Ok(smallvec![
            dq.map(|d| Tensor::activation(d, smallvec![n.b, n.h, n.tq, n.d])),
            dk.map(|d| Tensor::activation(d, smallvec![n.b, n.kvh, n.tk, n.d]))
        ])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.q.iter().chain(&self.k).chain([&self.y]).for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

struct ContextBackward {
    /// Saved when v needs a gradient.
    p: Option<Tensor>,
    /// Saved when the probabilities need a gradient.
    v: Option<Tensor>,
    n: Dims,
    qb: Rc<QueryBlocks>,
}

impl Backward for ContextBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let (n, qb) = (self.n, &*self.qb);
        let p = self.p.as_ref().filter(|_| needs[1]).map(|t| t.data());
        let v = self.v.as_ref().filter(|_| needs[0]).map(|t| t.data());
        let (dp, dv) = g
            .data()
            .attention_context_grad((p.as_deref(), v.as_deref()), n, qb)?;
        Ok(smallvec![
            dp.map(|d| Tensor::activation(d, smallvec![n.b, n.h, qb.packed])),
            dv.map(|d| Tensor::activation(d, smallvec![n.b, n.kvh, n.tk, n.d]))
        ])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.p.iter().chain(&self.v).for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
