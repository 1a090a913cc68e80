//! Block attention on the CPU (`ops::attention`): per query block, products straight
//! from q, k, v and the packed probabilities (no block copied out but the context's rows a
//! product reads), the masked softmax in place, and the shared heads' gradients summed in a
//! fixed order, so the bits depend on the operands alone.

use super::super::{Dims, KeyMask, QueryBlocks, Span, lowest};
use super::scores::{STACK_ROW, masked_score};
use super::softmax::{backward_row, forward_row};
use crate::cpu;
use crate::cpu::gemm::{Gemm, Layout};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::storage::{Buffer, IntoBuffer};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Gradients of an op's two inputs, each when asked.
pub(super) type GradPair<E> = (Option<Vec<E>>, Option<Vec<E>>);

/// Elements that compute in their own type (f32, f64): the fused path's.
pub(super) trait Exact: Gemm + Element<C = Self> + Real {}
impl Exact for f32 {}
impl Exact for f64 {}

/// `c = a·b` over C's uninitialised memory (m·n long), returned initialised.
#[allow(clippy::too_many_arguments)] // the BLAS signature
fn product_into<'c, E: Gemm>(
    (m, k, n): (usize, usize, usize),
    a: &[E],
    la: Layout,
    b: &[E],
    lb: Layout,
    c: &'c mut [MaybeUninit<E>],
) -> &'c mut [E] {
    let c = &mut c[..m * n];
    E::gemm_overwrite(m, k, n, a, la, b, lb, c);
    // SAFETY: `gemm_overwrite` writes every one of C's m·n elements, and `MaybeUninit<E>` has
    // E's layout, so the slice is initialised `E`s.
    unsafe { &mut *(c as *mut [MaybeUninit<E>] as *mut [E]) }
}

/// A buffer of `n` elements that `fill` writes completely (every element), never zeroed.
fn written<E: Element>(
    op: &'static str,
    n: usize,
    fill: impl FnOnce(&mut [MaybeUninit<E>]),
) -> Result<Vec<E>> {
    let mut v = cpu::with_capacity::<E>(op, n)?;
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the capacity is at least `n` and `fill` initialised all n elements (each
    // caller's blocks tile the buffer).
    unsafe { v.set_len(n) };
    Ok(v)
}

/// The context's rows of query block `s` of batch row `b`, head `h`, copied out: `[len, D]`.
fn gather<E: Copy>(c: &[E], n: Dims, b: usize, h: usize, s: &Span, out: &mut Vec<E>) {
    let width = n.h * n.d;
    out.clear();
    for r in s.start..s.start + s.len {
        out.extend_from_slice(&c[(b * n.tq + r) * width + h * n.d..][..n.d]);
    }
}

pub(super) fn probs<E: Exact>(
    q: &[E],
    k: &[E],
    n: Dims,
    qb: &QueryBlocks,
    mask: &KeyMask,
    scale: f64,
) -> Result<Vec<E>> {
    let (s, low) = (E::c(scale), E::c(lowest(E::DTYPE)));
    written("attention_probs", n.b * n.h * qb.packed, |p| {
        if qb.packed == 0 {
            return;
        }
        p.par_chunks_mut(qb.packed)
            .enumerate()
            .for_each(|(bh, out)| {
                let qh = &q[bh * n.tq * n.d..][..n.tq * n.d];
                let mut zs = [E::default(); STACK_ROW];
                for sp in &qb.spans {
                    let scores = product_into(
                        (sp.len, n.d, sp.keys),
                        &qh[sp.start * n.d..][..sp.len * n.d],
                        Layout::Normal,
                        n.kv(k, bh, sp.keys),
                        Layout::Transposed,
                        &mut out[sp.at..],
                    );
                    if sp.keys == 0 {
                        continue;
                    }
                    let b = bh / n.h;
                    for (r, row) in scores.chunks_mut(sp.keys).enumerate() {
                        let i = mask.offset + sp.start + r;
                        let z = |j: usize| masked_score(row[j], s, low, mask.hides(b, i, j));
                        if sp.keys <= STACK_ROW {
                            for (j, v) in zs[..sp.keys].iter_mut().enumerate() {
                                *v = z(j);
                            }
                            forward_row(&zs[..sp.keys], row, false);
                        } else {
                            let wide: Vec<E> = (0..sp.keys).map(z).collect();
                            forward_row(&wide, row, false);
                        }
                    }
                }
            });
    })
}

pub(super) fn context<E: Exact>(p: &[E], v: &[E], n: Dims, qb: &QueryBlocks) -> Result<Vec<E>> {
    let width = n.h * n.d;
    let mut ctx = cpu::zeroed::<E>("attention_context", n.b * n.tq * width)?;
    // One task per (batch row, block): its rows of the context, all heads.
    let mut tasks = Vec::with_capacity(n.b * qb.spans.len());
    let mut rest: &mut [E] = &mut ctx;
    for b in 0..n.b {
        for sp in &qb.spans {
            let (rows, tail) = std::mem::take(&mut rest).split_at_mut(sp.len * width);
            tasks.push((b, sp, rows));
            rest = tail;
        }
    }
    tasks.into_par_iter().for_each(|(b, sp, rows)| {
        let mut part = vec![E::default(); sp.len * n.d];
        for h in 0..n.h {
            let bh = b * n.h + h;
            E::gemm(
                sp.len,
                sp.keys,
                n.d,
                &p[bh * qb.packed + sp.at..][..sp.len * sp.keys],
                Layout::Normal,
                n.kv(v, bh, sp.keys),
                Layout::Normal,
                false,
                &mut part,
            );
            for (r, row) in part.chunks(n.d.max(1)).enumerate() {
                rows[r * width + h * n.d..][..n.d].copy_from_slice(row);
            }
        }
    });
    Ok(ctx)
}

/// dS = scale·P ⊙ (dP − Σ dP⊙P), then dq = dS·k and dk = Σ dSᵀ·q as asked.
pub(super) fn probs_grads<E: Exact>(
    g: &[E],
    y: &[E],
    q: Option<&[E]>,
    k: Option<&[E]>,
    n: Dims,
    qb: &QueryBlocks,
    scale: f64,
) -> Result<GradPair<E>> {
    let s = E::c(scale);
    let mut ds = cpu::zeroed::<E>("attention_probs_backward", g.len())?;
    if qb.packed > 0 {
        ds.par_chunks_mut(qb.packed)
            .enumerate()
            .for_each(|(bh, out)| {
                let at = bh * qb.packed;
                for sp in qb.spans.iter().filter(|sp| sp.keys > 0) {
                    let span = sp.at..sp.at + sp.len * sp.keys;
                    for ((o, g), y) in out[span.clone()]
                        .chunks_mut(sp.keys)
                        .zip(g[at + span.start..at + span.end].chunks(sp.keys))
                        .zip(y[at + span.start..at + span.end].chunks(sp.keys))
                    {
                        backward_row(g, y, o, false);
                        for v in o.iter_mut() {
                            *v *= s;
                        }
                    }
                }
            });
    }
    let dq = match k {
        None => None,
        Some(k) => Some(written(
            "attention_probs_backward",
            n.b * n.h * n.tq * n.d,
            |dq| {
                if n.tq * n.d == 0 {
                    return;
                }
                dq.par_chunks_mut(n.tq * n.d)
                    .enumerate()
                    .for_each(|(bh, out)| {
                        for sp in &qb.spans {
                            product_into(
                                (sp.len, sp.keys, n.d),
                                &ds[bh * qb.packed + sp.at..][..sp.len * sp.keys],
                                Layout::Normal,
                                n.kv(k, bh, sp.keys),
                                Layout::Normal,
                                &mut out[sp.start * n.d..],
                            );
                        }
                    });
            },
        )?),
    };
    let dk = match q {
        None => None,
        Some(q) => Some(shared_grads(n, qb, |bh, sp, dk| {
            E::gemm(
                sp.keys,
                sp.len,
                n.d,
                &ds[bh * qb.packed + sp.at..][..sp.len * sp.keys],
                Layout::Transposed,
                &q[(bh * n.tq + sp.start) * n.d..][..sp.len * n.d],
                Layout::Normal,
                true,
                dk,
            );
        })?),
    };
    Ok((dq, dk))
}

/// The gradient of k or v `[B, KVH, Tk, D]`: per key/value head (in parallel), `add(bh, span,
/// rows 0..keys)` over its query heads and their blocks in order.
fn shared_grads<E: Exact>(
    n: Dims,
    qb: &QueryBlocks,
    add: impl Fn(usize, &Span, &mut [E]) + Sync,
) -> Result<Vec<E>> {
    let mut out = cpu::zeroed::<E>("attention_backward", n.b * n.kvh * n.tk * n.d)?;
    if n.tk * n.d > 0 {
        let group = n.h / n.kvh;
        out.par_chunks_mut(n.tk * n.d)
            .enumerate()
            .for_each(|(bk, acc)| {
                let (b, kv) = (bk / n.kvh, bk % n.kvh);
                for h in kv * group..(kv + 1) * group {
                    for sp in &qb.spans {
                        add(b * n.h + h, sp, &mut acc[..sp.keys * n.d]);
                    }
                }
            });
    }
    Ok(out)
}

/// dP = dC·vᵀ (packed like P) and dv = Σ Pᵀ·dC as asked.
pub(super) fn context_grads<E: Exact>(
    g: &[E],
    p: Option<&[E]>,
    v: Option<&[E]>,
    n: Dims,
    qb: &QueryBlocks,
) -> Result<GradPair<E>> {
    let dp = match v {
        None => None,
        Some(v) => Some(written(
            "attention_context_backward",
            n.b * n.h * qb.packed,
            |dp| {
                if qb.packed == 0 {
                    return;
                }
                dp.par_chunks_mut(qb.packed)
                    .enumerate()
                    .for_each(|(bh, out)| {
                        let mut rows = Vec::new();
                        for sp in &qb.spans {
                            gather(g, n, bh / n.h, bh % n.h, sp, &mut rows);
                            product_into(
                                (sp.len, n.d, sp.keys),
                                &rows,
                                Layout::Normal,
                                n.kv(v, bh, sp.keys),
                                Layout::Transposed,
                                &mut out[sp.at..],
                            );
                        }
                    });
            },
        )?),
    };
    let dv = match p {
        None => None,
        Some(p) => Some(shared_grads(n, qb, |bh, sp, dv| {
            let mut rows = Vec::new();
            gather(g, n, bh / n.h, bh % n.h, sp, &mut rows);
            E::gemm(
                sp.keys,
                sp.len,
                n.d,
                &p[bh * qb.packed + sp.at..][..sp.len * sp.keys],
                Layout::Transposed,
                &rows,
                Layout::Normal,
                true,
                dv,
            );
        })?),
    };
    Ok((dp, dv))
}

pub(super) fn probs_of(
    q_buf: &Buffer,
    k: &Buffer,
    n: Dims,
    qb: &QueryBlocks,
    mask: &KeyMask,
    scale: f64,
) -> Result<Buffer> {
    match (q_buf, k) {
        (Buffer::F32(q), Buffer::F32(k)) => Ok(probs(q, k, n, qb, mask, scale)?.into_buffer()),
        (Buffer::F64(q), Buffer::F64(k)) => Ok(probs(q, k, n, qb, mask, scale)?.into_buffer()),
        (q, k) => Err(exact_only("attention_probs", q, k)),
    }
}

pub(super) fn probs_grads_of(
    g_buf: &Buffer,
    y: &Buffer,
    (q, k): (Option<&Buffer>, Option<&Buffer>),
    n: Dims,
    qb: &QueryBlocks,
    scale: f64,
) -> Result<(Option<Buffer>, Option<Buffer>)> {
    let op = "attention_probs_backward";
    match (g_buf, y) {
        (Buffer::F32(g), Buffer::F32(y)) => {
            let (q, k) = (typed(q, op)?, typed(k, op)?);
            Ok(pair(probs_grads::<f32>(g, y, q, k, n, qb, scale)?))
        }
        (Buffer::F64(g), Buffer::F64(y)) => {
            let (q, k) = (typed(q, op)?, typed(k, op)?);
            Ok(pair(probs_grads::<f64>(g, y, q, k, n, qb, scale)?))
        }
        (g, y) => Err(exact_only(op, g, y)),
    }
}

pub(super) fn context_of(p_buf: &Buffer, v: &Buffer, n: Dims, qb: &QueryBlocks) -> Result<Buffer> {
    match (p_buf, v) {
        (Buffer::F32(p), Buffer::F32(v)) => Ok(context(p, v, n, qb)?.into_buffer()),
        (Buffer::F64(p), Buffer::F64(v)) => Ok(context(p, v, n, qb)?.into_buffer()),
        (p, v) => Err(exact_only("attention_context", p, v)),
    }
}

pub(super) fn context_grads_of(
    g_buf: &Buffer,
    (p, v): (Option<&Buffer>, Option<&Buffer>),
    n: Dims,
    qb: &QueryBlocks,
) -> Result<(Option<Buffer>, Option<Buffer>)> {
    let op = "attention_context_backward";
    match g_buf {
        Buffer::F32(g) => {
            let (p, v) = (typed(p, op)?, typed(v, op)?);
            Ok(pair(context_grads::<f32>(g, p, v, n, qb)?))
        }
        Buffer::F64(g) => {
            let (p, v) = (typed(p, op)?, typed(v, op)?);
            Ok(pair(context_grads::<f64>(g, p, v, n, qb)?))
        }
        g => Err(exact_only(op, g, g)),
    }
}

/// Block attention runs in f32 and f64 only (autocast widens it), operands alike.
fn exact_only(op: &'static str, a: &Buffer, b: &Buffer) -> Error {
    Error::DTypeMismatch {
        op,
        lhs: a.dtype(),
        rhs: b.dtype(),
    }
}

/// An optional operand as a slice of `E`, a wrong dtype an error.
fn typed<'a, E: Element>(b: Option<&'a Buffer>, op: &'static str) -> Result<Option<&'a [E]>> {
    b.map(|b| {
        b.typed().ok_or(Error::DTypeMismatch {
            op,
            lhs: b.dtype(),
            rhs: E::DTYPE,
        })
    })
    .transpose()
}

fn pair<E: Element>((a, b): GradPair<E>) -> (Option<Buffer>, Option<Buffer>) {
    (a.map(Buffer::from_vec), b.map(Buffer::from_vec))
}
