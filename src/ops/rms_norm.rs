//! RMS normalisation over the last dim (Llama, Qwen2, GLM): r = 1/√(mean(x²) + ε), x̂ = x·r,
//! y = x̂·w. With gy = g·w and means over the row: dx = r·(gy − x̂·mean(gy·x̂)), dw = Σ_rows g·x̂.
//! Saves: the input, the per-row r and the weight.
//! Row statistics and results are computed in f64 and rounded once (transformers computes the
//! statistics in f32, then multiplies by the weight in the input's dtype).

use crate::autograd::{Backward, Grads};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::{cpu, with_buffer, zip_buffers};
use num_traits::ToPrimitive;
use rayon::prelude::*;
use smallvec::smallvec;

static RMS_NORM: OpSpec = OpSpec::new("rms_norm", "RmsNorm").cast(Cast::Widen);

/// An element in f64 (exact).
#[inline(always)]
fn wide<E: Element>(v: E) -> f64 {
    v.to_c().to_f64().unwrap_or(f64::NAN)
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
fn normalise<E: Element>(x: &[E], w: &[f64], d: usize, eps: f64) -> Result<(Vec<E>, Vec<E>)> {
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

impl Tensor {
    /// RMS norm over the last dim with weight `[d]`: `x · rsqrt(mean(x²) + eps) · w`.
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        let d = *self
            .shape()
            .last()
            .ok_or_else(|| Error::invalid("rms_norm", "input needs at least 1 dim"))?;
        if weight.shape() != [d] {
            return Err(Error::ShapeMismatch {
                op: "rms_norm",
                lhs: self.shape().to_vec(),
                rhs: weight.shape().to_vec(),
            });
        }
        if d == 0 {
            return Err(Error::invalid(
                "rms_norm",
                "cannot normalise over an empty dim",
            ));
        }
        let rstd = std::cell::RefCell::new(None);
        dispatch::apply(
            &RMS_NORM,
            &[self, weight],
            |t| {
                same_dtype("rms_norm", t[0], t[1])?;
                let w = t[1].to_vec_f64();
                let (y, rs) = with_buffer!(&*t[0].data(), x => {
                    let (y, rs) = normalise(x, &w, d, eps)?;
                    (y.into_buffer(), rs.into_buffer())
                });
                let rows = t[0].numel() / d;
                *rstd.borrow_mut() = Some(Tensor::activation(rs, smallvec![rows]));
                Ok(Forward::from(Tensor::activation(y, t[0].shape().into())))
            },
            |t, _| RmsNormBackward {
                x: save(t[0]),
                rstd: save(&rstd.take().expect("the forward computed them")),
                weight: save(t[1]),
            },
        )
    }
}

struct RmsNormBackward {
    x: Tensor,
    rstd: Tensor,
    weight: Tensor,
}

/// dx and dw in f64, rounded once: blocks of rows in parallel, each block's dw a partial sum,
/// the partials added in block order.
fn grads<E: Element>(
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

impl Backward for RmsNormBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let d = *self.x.shape().last().expect("checked in forward");
        let w = self.weight.to_vec_f64();
        let (dx, dw) = zip_buffers!("rms_norm_backward", &*g.data(), &*self.x.data(), gv, xv => {
            let rstd = self.rstd.data();
            let rv = rstd.typed().expect("statistics share x's dtype");
            let (dx, dw) = grads(gv, xv, rv, &w, d)?;
            (dx.into_buffer(), dw.into_buffer())
        })?;
        Ok(smallvec![
            needs[0].then(|| Tensor::activation(dx, self.x.shape().into())),
            needs[1].then(|| Tensor::activation(dw, smallvec![d]))
        ])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.x);
        f(&self.rstd);
        f(&self.weight);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
