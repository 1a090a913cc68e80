//! Layer normalisation over the last dim: x̂ = (x − μ)·r with r = 1/√(σ² + ε) (biased σ²),
//! y = x̂·w + b. With gy = g·w and means over the row:
//! dx = r·(gy − mean(gy) − x̂·mean(gy·x̂)), dw = Σ_rows g·x̂, db = Σ_rows g.
//! Saves: the input, the per-row mean and 1/σ (as PyTorch does), and the weight.
//! Row statistics and results are computed in f64 and rounded once, so a row with a large mean
//! and a small spread keeps its precision (PyTorch's f32 kernels lose some there).

use crate::autograd::{Backward, Grads};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use num_traits::ToPrimitive;
use smallvec::smallvec;

/// An element in f64 (exact: every element type widens losslessly).
fn wide<E: Element>(v: E) -> f64 {
    v.to_c().to_f64().unwrap_or(f64::NAN)
}

/// Per-row mean and variance in f64 (two passes): as accurate as the data allows even when
/// the mean is large against the spread, where f32 sums lose the low bits.
fn row_stats<E: Element>(row: &[E]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| wide(*v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|v| {
            let c = wide(*v) - mean;
            c * c
        })
        .sum::<f64>()
        / n;
    (mean, var)
}

/// A parameter's values in f64 (`None` without one).
fn param(p: Option<&Tensor>) -> Option<Vec<f64>> {
    p.map(Tensor::to_vec_f64)
}

/// y, per-row mean and per-row 1/σ, computed in f64 and rounded once.
fn normalise<E: Element>(
    x: &[E],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    d: usize,
    eps: f64,
) -> (Vec<E>, Vec<E>, Vec<E>) {
    if x.is_empty() {
        return (Vec::new(), Vec::new(), Vec::new()); // no rows; `d` may still be huge
    }
    let (w, b) = (param(weight), param(bias));
    let rows = x.len() / d;
    let (mut y, mut mu, mut rs) = (
        Vec::with_capacity(x.len()),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for row in x.chunks(d) {
        let (m, var) = row_stats(row);
        let r = 1.0 / (var + eps).sqrt();
        for (k, v) in row.iter().enumerate() {
            let xhat = (wide(*v) - m) * r;
            let scaled = w.as_ref().map_or(xhat, |w| xhat * w[k]);
            y.push(E::from_c(Real::c(
                b.as_ref().map_or(scaled, |b| scaled + b[k]),
            )));
        }
        mu.push(E::from_c(Real::c(m)));
        rs.push(E::from_c(Real::c(r)));
    }
    (y, mu, rs)
}

static LAYER_NORM: OpSpec = OpSpec::new("layer_norm", "NativeLayerNorm").cast(Cast::Widen);

impl Tensor {
    /// Layer norm over the last dim with optional elementwise affine weight and bias `[d]`.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        let stats = std::cell::RefCell::new(None);
        dispatch::apply(
            &LAYER_NORM,
            &inputs,
            |t| {
                let (w, b) = (has_w.then(|| t[1]), has_b.then(|| t[t.len() - 1]));
                let (y, mean, rstd) = t[0].layer_norm_forward(w, b, eps)?;
                *stats.borrow_mut() = Some((mean, rstd));
                Ok(Forward::from(y))
            },
            |t, _| {
                let (mean, rstd) = stats.take().expect("the forward computed them");
                LayerNormBackward {
                    x: save(t[0]),
                    mean: save(&mean),
                    rstd: save(&rstd),
                    weight: has_w.then(|| save(t[1])),
                    has_bias: has_b,
                }
            },
        )
    }

    /// y, the row means and 1/σ.
    fn layer_norm_forward(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let d = *self
            .shape()
            .last()
            .ok_or_else(|| Error::invalid("layer_norm", "input needs at least 1 dim"))?;
        for p in weight.iter().chain(bias.iter()) {
            same_dtype("layer_norm", self, p)?;
            if p.shape() != [d] {
                return Err(Error::ShapeMismatch {
                    op: "layer_norm",
                    lhs: self.shape().to_vec(),
                    rhs: p.shape().to_vec(),
                });
            }
        }
        if d == 0 {
            return Err(Error::invalid(
                "layer_norm",
                "cannot normalise over an empty dim",
            ));
        }
        let (out, mean, rstd) = with_buffer!(&*self.data(), x => {
            let (y, mu, r) = normalise(x, weight, bias, d, eps);
            (y.into_buffer(), mu.into_buffer(), r.into_buffer())
        });
        let rows = self.numel() / d;
        Ok((
            Tensor::activation(out, self.shape().into()),
            Tensor::activation(mean, smallvec![rows]),
            Tensor::activation(rstd, smallvec![rows]),
        ))
    }
}

struct LayerNormBackward {
    x: Tensor,
    mean: Tensor,
    rstd: Tensor,
    weight: Option<Tensor>,
    has_bias: bool,
}

/// dx, dw, db in f64, rounded once. The row mean is recomputed in f64 from x (the saved one
/// is rounded to x's dtype); 1/σ is the saved one.
fn grads<E: Element>(
    g: &[E],
    x: &[E],
    rstd: &[E],
    w: Option<&[f64]>,
    d: usize,
    param_grads: bool,
) -> (Vec<E>, Vec<E>, Vec<E>) {
    let mut dx = Vec::with_capacity(x.len());
    let k = if param_grads && !x.is_empty() { d } else { 0 };
    let (mut dw, mut db) = (vec![0f64; k], vec![0f64; k]);
    let n = d as f64;
    for (r, (gr, xr)) in g.chunks(d).zip(x.chunks(d)).enumerate() {
        let (m, _) = row_stats(xr);
        let rs = wide(rstd[r]);
        let xhat: Vec<f64> = xr.iter().map(|v| (wide(*v) - m) * rs).collect();
        let gy: Vec<f64> = match w {
            Some(w) => gr.iter().zip(w).map(|(g, &w)| wide(*g) * w).collect(),
            None => gr.iter().map(|g| wide(*g)).collect(),
        };
        let mean_gy = gy.iter().sum::<f64>() / n;
        let mean_gyx = gy.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<f64>() / n;
        for j in 0..d {
            dx.push(E::from_c(Real::c(
                rs * (gy[j] - mean_gy - xhat[j] * mean_gyx),
            )));
            if k > 0 {
                let gj = wide(gr[j]);
                dw[j] += gj * xhat[j];
                db[j] += gj;
            }
        }
    }
    let conv = |v: Vec<f64>| v.into_iter().map(|x| E::from_c(Real::c(x))).collect();
    (dx, conv(dw), conv(db))
}

impl Backward for LayerNormBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let d = *self.x.shape().last().expect("checked in forward");
        let (dx, dw, db) = zip_buffers!("layer_norm_backward", &*g.data(), &*self.x.data(), gv, xv => {
            let rstd = self.rstd.data();
            let w = param(self.weight.as_ref());
            let rv = rstd.typed().expect("stats share x's dtype");
            let param_grads = self.weight.is_some() || self.has_bias;
            let (dx, dw, db) = grads(gv, xv, rv, w.as_deref(), d, param_grads);
            (dx.into_buffer(), dw.into_buffer(), db.into_buffer())
        })?;
        let mut out: Grads =
            smallvec![needs[0].then(|| Tensor::activation(dx, self.x.shape().into()))];
        if self.weight.is_some() {
            out.push(needs[1].then(|| Tensor::activation(dw, smallvec![d])));
        }
        if self.has_bias {
            out.push(needs[out.len()].then(|| Tensor::activation(db, smallvec![d])));
        }
        Ok(out)
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.x);
        f(&self.mean);
        f(&self.rstd);
        if let Some(w) = &self.weight {
            f(w);
        }
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
