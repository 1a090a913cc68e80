//! Layer normalisation over the last dim: x̂ = (x − μ)·r with r = 1/√(σ² + ε) (biased σ²),
//! y = x̂·w + b. With gy = g·w and means over the row:
//! dx = r·(gy − mean(gy) − x̂·mean(gy·x̂)), dw = Σ_rows g·x̂, db = Σ_rows g.
//! Saves: the input, the per-row mean and 1/σ (as PyTorch does), and the weight.

use crate::autograd::{Backward, Grads};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::ops::{same_dtype, save};
use crate::storage::IntoBuffer;
use crate::tape::record;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use num_traits::{Float, Zero};
use smallvec::smallvec;

/// Rounds compute-type values to the element type of `_like`.
fn like<E: Element>(_like: &[E], v: Vec<E::C>) -> Vec<E> {
    v.into_iter().map(E::from_c).collect()
}

fn stats<E: Element>(x: &[E], d: usize, eps: f64) -> (Vec<E::C>, Vec<E::C>) {
    let n = <E::C as Real>::c(d as f64);
    x.chunks(d)
        .map(|row| {
            let mu = row.iter().map(|v| v.to_c()).sum::<E::C>() / n;
            let var = row
                .iter()
                .map(|v| (v.to_c() - mu) * (v.to_c() - mu))
                .sum::<E::C>()
                / n;
            (mu, (var + <E::C as Real>::c(eps)).sqrt().recip())
        })
        .unzip()
}

fn param<E: Element>(_like: &[E], p: Option<&Tensor>, k: usize, default: f64) -> Vec<E::C> {
    match p {
        None => vec![<E::C as Real>::c(default); k],
        Some(t) => t.to_vec_f64().into_iter().map(<E::C as Real>::c).collect(),
    }
}

/// y, per-row mean and per-row 1/σ.
fn normalise<E: Element>(
    x: &[E],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    d: usize,
    eps: f64,
) -> (Vec<E>, Vec<E>, Vec<E>) {
    let (mu, r) = stats(x, d, eps);
    let (w, b) = (param(x, weight, d, 1.0), param(x, bias, d, 0.0));
    let mut y = Vec::with_capacity(x.len());
    for (row, (&m, &rs)) in x.chunks(d).zip(mu.iter().zip(&r)) {
        for (k, &v) in row.iter().enumerate() {
            y.push(E::from_c((v.to_c() - m) * rs * w[k] + b[k]));
        }
    }
    (y, like(x, mu), like(x, r))
}

impl Tensor {
    /// Layer norm over the last dim with optional elementwise affine weight and bias `[d]`.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        use crate::ops::autocast::widen;
        let (w, b) = (weight.map(widen).transpose()?, bias.map(widen).transpose()?);
        widen(self)?.layer_norm_impl(w.as_ref(), b.as_ref(), eps)
    }

    fn layer_norm_impl(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
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
        let mean = Tensor::activation(mean, smallvec![rows]);
        let rstd = Tensor::activation(rstd, smallvec![rows]);
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        Ok(record(
            "layer_norm",
            &inputs,
            Tensor::activation(out, self.shape().into()),
            |_| LayerNormBackward {
                x: save(self),
                mean,
                rstd,
                weight: weight.map(save),
                has_bias: bias.is_some(),
            },
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

fn grads<E: Element>(
    g: &[E],
    x: &[E],
    mean: &[E],
    rstd: &[E],
    w: &[E::C],
    d: usize,
) -> (Vec<E>, Vec<E>, Vec<E>) {
    let n = <E::C as Real>::c(d as f64);
    let mut dx = Vec::with_capacity(x.len());
    let mut dw = vec![E::C::zero(); d];
    let mut db = vec![E::C::zero(); d];
    for (r, (gr, xr)) in g.chunks(d).zip(x.chunks(d)).enumerate() {
        let (m, rs) = (mean[r].to_c(), rstd[r].to_c());
        let xhat: Vec<E::C> = xr.iter().map(|v| (v.to_c() - m) * rs).collect();
        let gy: Vec<E::C> = gr.iter().zip(w).map(|(g, &w)| g.to_c() * w).collect();
        let mean_gy = gy.iter().copied().sum::<E::C>() / n;
        let mean_gyx = gy.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<E::C>() / n;
        for k in 0..d {
            dx.push(E::from_c(rs * (gy[k] - mean_gy - xhat[k] * mean_gyx)));
            dw[k] += gr[k].to_c() * xhat[k];
            db[k] += gr[k].to_c();
        }
    }
    let conv = |v: Vec<E::C>| v.into_iter().map(E::from_c).collect();
    (dx, conv(dw), conv(db))
}

impl Backward for LayerNormBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let d = *self.x.shape().last().expect("checked in forward");
        let (dx, dw, db) = zip_buffers!("layer_norm_backward", &*g.data(), &*self.x.data(), gv, xv => {
            let (mean, rstd) = (self.mean.data(), self.rstd.data());
            let w = param(xv, self.weight.as_ref(), d, 1.0);
            let (mv, rv) = (mean.typed().expect("stats share x's dtype"), rstd.typed().expect("stats share x's dtype"));
            let (dx, dw, db) = grads(gv, xv, mv, rv, &w, d);
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
