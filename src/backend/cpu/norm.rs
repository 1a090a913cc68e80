//! Layer and RMS normalisation over the last dim on the CPU. Row statistics and results are
//! computed in f64 and rounded once, so a row with a large mean and a small spread keeps its
//! precision; RMS norm runs blocks of rows in parallel with the weight gradient's partial sums
//! fixed by the row width (the same bits at any thread count).

use crate::cpu;
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};
use num_traits::ToPrimitive;
use rayon::prelude::*;

/// An element in f64 (exact: every element type widens losslessly).
#[inline(always)]
fn wide<E: Element>(v: E) -> f64 {
    v.to_c().to_f64().unwrap_or(f64::NAN)
}

pub(super) type Three = (Buffer, Buffer, Buffer);

pub(super) fn layer_norm(
    x: &Buffer,
    w: Option<&Buffer>,
    b: Option<&Buffer>,
    d: usize,
    eps: f64,
) -> Result<Three> {
    let (w, b) = (w.map(Buffer::to_f64_vec), b.map(Buffer::to_f64_vec));
    Ok(with_buffer!(x, x => {
        let (y, mu, r) = layer_normalise(x, w, b, d, eps)?;
        (y.into_buffer(), mu.into_buffer(), r.into_buffer())
    }))
}

pub(super) fn layer_norm_grad(
    g: &Buffer,
    x: &Buffer,
    rstd: &Buffer,
    w: Option<&Buffer>,
    d: usize,
    param_grads: bool,
) -> Result<Three> {
    let w = w.map(Buffer::to_f64_vec);
    zip_buffers!("layer_norm_backward", g, x, gv, xv => {
        let rv = typed_like(rstd, xv, "layer_norm_backward")?;
        let (dx, dw, db) = layer_grads(gv, xv, rv, w.as_deref(), d, param_grads)?;
        (dx.into_buffer(), dw.into_buffer(), db.into_buffer())
    })
}

pub(super) fn rms_norm(x: &Buffer, w: &Buffer, d: usize, eps: f64) -> Result<(Buffer, Buffer)> {
    let w = w.to_f64_vec();
    Ok(with_buffer!(x, x => {
        let (y, rs) = rms_normalise(x, &w, d, eps)?;
        (y.into_buffer(), rs.into_buffer())
    }))
}

pub(super) fn rms_norm_grad(
    g: &Buffer,
    x: &Buffer,
    rstd: &Buffer,
    w: &Buffer,
    d: usize,
) -> Result<(Buffer, Buffer)> {
    let w = w.to_f64_vec();
    zip_buffers!("rms_norm_backward", g, x, gv, xv => {
        let rv = typed_like(rstd, xv, "rms_norm_backward")?;
        let (dx, dw) = rms_grads(gv, xv, rv, &w, d)?;
        (dx.into_buffer(), dw.into_buffer())
    })
}

/// `s` as a slice of `like`'s element type (a saved statistic shares its input's dtype).
fn typed_like<'a, E: Element>(s: &'a Buffer, _like: &[E], op: &'static str) -> Result<&'a [E]> {
    s.typed().ok_or(crate::error::Error::DTypeMismatch {
        op,
        lhs: s.dtype(),
        rhs: E::DTYPE,
    })
}

/// Per-row mean and variance in f64 (two passes, eight interleaved partial sums: vectorised):
/// as accurate as the data allows even when the mean is large against the spread, where f32
/// sums lose the low bits.
#[inline(always)]
fn row_stats<E: Element>(row: &[E]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = cpu::lane_sum(row.len(), |j| wide(row[j])) / n;
    let var = cpu::lane_sum(row.len(), |j| {
        let c = wide(row[j]) - mean;
        c * c
    }) / n;
    (mean, var)
}

/// y, per-row mean and per-row 1/σ, computed in f64 and rounded once; blocks of rows in
/// parallel.
fn layer_normalise<E: Element>(
    x: &[E],
    w: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
    d: usize,
    eps: f64,
) -> Result<(Vec<E>, Vec<E>, Vec<E>)> {
    if x.is_empty() {
        return Ok((Vec::new(), Vec::new(), Vec::new())); // no rows; `d` may still be huge
    }
    let rows = x.len() / d;
    let mut y = cpu::zeroed::<E>("layer_norm", x.len())?;
    let mut mu = cpu::zeroed::<E>("layer_norm", rows)?;
    let mut rs = cpu::zeroed::<E>("layer_norm", rows)?;
    let (w, b) = (w.as_deref(), b.as_deref());
    let per = block_rows(d);
    y.par_chunks_mut(per * d)
        .zip(mu.par_chunks_mut(per))
        .zip(rs.par_chunks_mut(per))
        .zip(x.par_chunks(per * d))
        .for_each(|(((yb, mb), rb), xb)| {
            cpu::simd(
                #[inline(always)]
                || {
                    let rows = yb.chunks_mut(d).zip(mb.iter_mut()).zip(rb.iter_mut());
                    for (((yr, m_out), r_out), xr) in rows.zip(xb.chunks(d)) {
                        let (m, var) = row_stats(xr);
                        let r = 1.0 / (var + eps).sqrt();
                        for (k, (o, v)) in yr.iter_mut().zip(xr).enumerate() {
                            let xhat = (wide(*v) - m) * r;
                            let scaled = w.map_or(xhat, |w| xhat * w[k]);
                            *o = E::from_c(Real::c(b.map_or(scaled, |b| scaled + b[k])));
                        }
                        *m_out = E::from_c(Real::c(m));
                        *r_out = E::from_c(Real::c(r));
                    }
                },
            )
        });
    Ok((y, mu, rs))
}

/// dx, dw, db in f64, rounded once: blocks of rows in parallel, each block's dw and db a
/// partial sum, the partials added in block order. The row mean is recomputed in f64 from x
/// (the saved one is rounded to x's dtype); 1/σ is the saved one.
fn layer_grads<E: Element>(
    g: &[E],
    x: &[E],
    rstd: &[E],
    w: Option<&[f64]>,
    d: usize,
    param_grads: bool,
) -> Result<(Vec<E>, Vec<E>, Vec<E>)> {
    let mut dx = cpu::zeroed::<E>("layer_norm_backward", x.len())?;
    let k = if param_grads && !x.is_empty() { d } else { 0 };
    let n = d as f64;
    let per = block_rows(d);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(per * d)
        .zip(g.par_chunks(per * d))
        .zip(x.par_chunks(per * d))
        .zip(rstd.par_chunks(per))
        .map(|(((dxb, gb), xb), rb)| {
            let (mut dw, mut db) = (vec![0f64; k], vec![0f64; k]);
            let (mut xhat, mut gy) = (vec![0f64; d], vec![0f64; d]);
            cpu::simd(
                #[inline(always)]
                || {
                    let rows = dxb.chunks_mut(d).zip(gb.chunks(d)).zip(xb.chunks(d));
                    for (((dxr, gr), xr), r) in rows.zip(rb) {
                        let (m, _) = row_stats(xr);
                        let rs = wide(*r);
                        for j in 0..d {
                            xhat[j] = (wide(xr[j]) - m) * rs;
                            gy[j] = w.map_or(wide(gr[j]), |w| wide(gr[j]) * w[j]);
                        }
                        let mean_gy = cpu::lane_sum(d, |j| gy[j]) / n;
                        let mean_gyx = cpu::lane_sum(d, |j| gy[j] * xhat[j]) / n;
                        for j in 0..d {
                            dxr[j] =
                                E::from_c(Real::c(rs * (gy[j] - mean_gy - xhat[j] * mean_gyx)));
                        }
                        for j in 0..k {
                            let gj = wide(gr[j]);
                            dw[j] += gj * xhat[j];
                            db[j] += gj;
                        }
                    }
                },
            );
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f64; k], vec![0f64; k]);
    for (pw, pb) in &partials {
        for j in 0..k {
            dw[j] += pw[j];
            db[j] += pb[j];
        }
    }
    let conv = |v: Vec<f64>| v.into_iter().map(|x| E::from_c(Real::c(x))).collect();
    Ok((dx, conv(dw), conv(db)))
}

/// Rows per parallel block: fixed by the row width alone, so the weight gradient's partial
/// sums — and its bits — do not depend on the thread count.
fn block_rows(d: usize) -> usize {
    (cpu::CHUNK / d.max(1)).max(1)
}

/// 1/√(mean(x²) + ε) of one row, in f64 (eight interleaved partial sums: vectorised).
#[inline(always)]
fn row_rstd<E: Element>(row: &[E], eps: f64) -> f64 {
    let ms = cpu::lane_sum(row.len(), |j| wide(row[j]) * wide(row[j])) / row.len() as f64;
    1.0 / (ms + eps).sqrt()
}

/// y and the per-row r, blocks of rows in parallel.
fn rms_normalise<E: Element>(x: &[E], w: &[f64], d: usize, eps: f64) -> Result<(Vec<E>, Vec<E>)> {
    let rows = x.len() / d;
    let mut y = cpu::zeroed::<E>("rms_norm", x.len())?;
    let mut rs = cpu::zeroed::<E>("rms_norm", rows)?;
    let per = block_rows(d);
    y.par_chunks_mut(per * d)
        .zip(rs.par_chunks_mut(per))
        .zip(x.par_chunks(per * d))
        .for_each(|((yb, rb), xb)| {
            cpu::simd(
                #[inline(always)]
                || {
                    for ((yr, r_out), xr) in yb.chunks_mut(d).zip(rb.iter_mut()).zip(xb.chunks(d)) {
                        let r = row_rstd(xr, eps);
                        for ((o, v), w) in yr.iter_mut().zip(xr).zip(w) {
                            *o = E::from_c(Real::c(wide(*v) * r * w));
                        }
                        *r_out = E::from_c(Real::c(r));
                    }
                },
            )
        });
    Ok((y, rs))
}

/// dx and dw in f64, rounded once: blocks of rows in parallel, each block's dw a partial sum,
/// the partials added in block order.
fn rms_grads<E: Element>(
    g: &[E],
    x: &[E],
    rstd: &[E],
    w: &[f64],
    d: usize,
) -> Result<(Vec<E>, Vec<E>)> {
    let mut dx = cpu::zeroed::<E>("rms_norm_backward", x.len())?;
    let n = d as f64;
    let per = block_rows(d);
    let partials: Vec<Vec<f64>> = dx
        .par_chunks_mut(per * d)
        .zip(g.par_chunks(per * d))
        .zip(x.par_chunks(per * d))
        .zip(rstd.par_chunks(per))
        .map(|(((dxb, gb), xb), rb)| {
            let mut dw = vec![0f64; d];
            cpu::simd(
                #[inline(always)]
                || {
                    for (((dxr, gr), xr), r) in dxb
                        .chunks_mut(d)
                        .zip(gb.chunks(d))
                        .zip(xb.chunks(d))
                        .zip(rb)
                    {
                        let rs = wide(*r);
                        // mean(gy·x̂) with gy = g·w, x̂ = x·r.
                        let mean =
                            cpu::lane_sum(d, |j| wide(gr[j]) * w[j] * (wide(xr[j]) * rs)) / n;
                        for j in 0..d {
                            let xhat = wide(xr[j]) * rs;
                            let gj = wide(gr[j]);
                            dxr[j] = E::from_c(Real::c(rs * (gj * w[j] - xhat * mean)));
                            dw[j] += gj * xhat;
                        }
                    }
                },
            );
            dw
        })
        .collect();
    let mut dw = vec![0f64; if x.is_empty() { 0 } else { d }];
    for p in &partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    Ok((dx, dw.into_iter().map(|v| E::from_c(Real::c(v))).collect()))
}
