//! Moving elements on the CPU: strided block copies (narrow, cat, repeated heads), permutes,
//! row gathers and scatter-adds (embeddings), masked fills and dropout masks.

use super::super::Copy2d;
use crate::cpu::{self, broadcast};
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::rng;
use crate::shape::strides;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};
use num_traits::Zero;
use rayon::prelude::*;

pub(super) fn copy2d(src: &Buffer, dst: &mut Buffer, c: Copy2d, add: bool) -> Result<()> {
    let op = if add { "add2d" } else { "copy2d" };
    zip_buffers!(op, src, dst, s, d => rows2d(s, d, c, add))
}

fn rows2d<E: Element>(s: &[E], d: &mut [E], c: Copy2d, add: bool) {
    for r in 0..c.rows {
        let from = &s[c.src_at + r * c.src_stride..][..c.width];
        let to = &mut d[c.dst_at + r * c.dst_stride..][..c.width];
        if add {
            cpu::zip_assign(
                to,
                from,
                #[inline(always)]
                |x, y| x + y,
            );
        } else {
            to.copy_from_slice(from);
        }
    }
}

pub(super) fn permute(x: &Buffer, shape: &[usize], dims: &[usize]) -> Result<Buffer> {
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let src_strides: Vec<usize> = dims.iter().map(|&d| in_strides[d]).collect();
    // One output row (last dim) at a time: a slice copy when the last dim stays innermost,
    // else a strided gather.
    let w = out_shape.last().copied().unwrap_or(1).max(1);
    let step = src_strides.last().copied().unwrap_or(1);
    Ok(with_buffer!(x, v => {
        let mut out = cpu::zeroed("permute", v.len())?;
        cpu::rows_mut(&mut out, w, |r, row| {
            let base = cpu::row_base(r, &out_shape, &src_strides);
            if step == 1 {
                row.copy_from_slice(&v[base..base + row.len()]);
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = v[base + j * step];
                }
            }
        });
        out.into_buffer()
    }))
}

pub(super) fn index_select(w: &Buffer, ids: &[i64], d: usize) -> Result<Buffer> {
    Ok(with_buffer!(w, w => {
        let n = ids.len().saturating_mul(d);
        let mut o = cpu::with_capacity("embedding", n)?;
        for &i in ids {
            o.extend_from_slice(&w[i as usize * d..(i as usize + 1) * d]);
        }
        o.into_buffer()
    }))
}

pub(super) fn index_add(
    g: &Buffer,
    ids: &[i64],
    (rows, d): (usize, usize),
    skip: Option<i64>,
) -> Result<Buffer> {
    Ok(with_buffer!(g, g => scatter_add(g, ids, rows, d, skip)?.into_buffer()))
}

/// Row `ids[j]` += g's row j in the compute type, rows in order, then rounded once.
fn scatter_add<E: Element>(
    g: &[E],
    ids: &[i64],
    rows: usize,
    d: usize,
    skip: Option<i64>,
) -> Result<Vec<E>> {
    let mut acc = cpu::with_capacity::<E::C>("embedding_backward", rows * d)?;
    acc.resize(rows * d, E::C::zero());
    for (j, &i) in ids.iter().enumerate().filter(|(_, i)| Some(**i) != skip) {
        for (a, &x) in acc[i as usize * d..(i as usize + 1) * d]
            .iter_mut()
            .zip(&g[j * d..(j + 1) * d])
        {
            *a += x.to_c();
        }
    }
    Ok(acc.into_iter().map(E::from_c).collect())
}

pub(super) fn masked_fill(
    x: &Buffer,
    mask: &Buffer,
    (xs, ms): (&[usize], &[usize]),
    value: f64,
) -> Result<Buffer> {
    zip_buffers!("masked_fill", x, mask, v, m => {
        broadcast::binary("masked_fill", v, xs, m, ms, xs, |a, k| if k.is_zero() { a } else { Real::c(value) })?.into_buffer()
    })
}

pub(super) fn dropout_mask(like: &Buffer, p: f64) -> Result<Buffer> {
    Ok(with_buffer!(like, v => mask(v, p)?.into_buffer()))
}

/// 1/(1−p) where the engine generator's uniform draw is ≥ p, else 0, one draw per element
/// at its index (so the mask does not depend on the thread count).
fn mask<E: Element>(like: &[E], p: f64) -> Result<Vec<E>> {
    let n = like.len();
    let st = rng::reserve(n);
    let scale = E::from_c(<E::C as Real>::c(1.0 / (1.0 - p)));
    let mut m = cpu::zeroed("dropout", n)?;
    m.par_chunks_mut(cpu::CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let keep = rng::uniform(st, (c * cpu::CHUNK + j) as u64) >= p;
                *v = if keep { scale } else { E::default() };
            }
        });
    Ok(m)
}
