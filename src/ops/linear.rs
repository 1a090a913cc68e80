//! Fused linear layer y = x·Wᵀ + b (PyTorch's `F.linear`, computed as one GEMM with the bias
//! preloaded). With G = dL/dy: dx = G·W, dW = Gᵀ·x, db = Σ_rows G.
//! Saves: x when W needs a gradient, W when x does; nothing for b.

use crate::autograd::{Backward, Grads};
use crate::backend::Layout;
use crate::backend::{BackendStorage, Product};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::shape::Shape;
use crate::tensor::Tensor;
use smallvec::smallvec;

static LINEAR: OpSpec = OpSpec::new("linear", "Addmm").cast(Cast::Lower).dot();

impl Tensor {
    /// y = x·Wᵀ + b for x `[..., in]`, W `[out, in]`, b `[out]`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (xs, ws) = (self.shape(), weight.shape());
        if xs.is_empty() || ws.len() != 2 || xs[xs.len() - 1] != ws[1] {
            return Err(Error::ShapeMismatch {
                op: "linear",
                lhs: xs.to_vec(),
                rhs: ws.to_vec(),
            });
        }
        let (din, dout) = (ws[1], ws[0]);
        let rows: usize = xs[..xs.len() - 1].iter().product();
        if let Some(b) = bias
            && b.shape() != [dout]
        {
            return Err(Error::ShapeMismatch {
                op: "linear",
                lhs: ws.to_vec(),
                rhs: b.shape().to_vec(),
            });
        }
        let mut out_shape: Shape = xs.into();
        *out_shape.last_mut().expect("rank checked") = dout;
        crate::shape::checked_numel("linear", &out_shape)?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        dispatch::apply(
            &LINEAR,
            &inputs,
            |t| {
                for p in &t[1..] {
                    same_dtype("linear", t[0], p)?;
                }
                let (x, w, b) = (t[0].clone(), t[1].clone(), t.get(2).map(|b| (*b).clone()));
                Ok(Forward::Product {
                    shape: out_shape,
                    dtype: x.dtype(),
                    compute: Box::new(move || {
                        let bd = b.as_ref().map(|b| b.data());
                        x.data().linear(&w.data(), bd.as_deref(), (rows, din, dout))
                    }),
                })
            },
            |t, _| LinearBackward {
                rows,
                din,
                dout,
                x_shape: t[0].shape().into(),
                x: t[1].requires_grad().then(|| save(t[0])),
                w: t[0].requires_grad().then(|| save(t[1])),
            },
        )
    }
}

struct LinearBackward {
    rows: usize,
    din: usize,
    dout: usize,
    x_shape: Shape,
    x: Option<Tensor>,
    w: Option<Tensor>,
}

impl Backward for LinearBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let (rows, din, dout) = (self.rows, self.din, self.dout);
        let gx = match (needs[0], &self.w) {
            (true, Some(w)) => Some(g.data().product(
                &w.data(),
                Product::single((rows, dout, din), Layout::Normal, Layout::Normal),
                "linear_backward",
            )?),
            _ => None,
        };
        let gw = match (needs[1], &self.x) {
            (true, Some(x)) => Some(g.data().product(
                &x.data(),
                Product::single((dout, rows, din), Layout::Transposed, Layout::Normal),
                "linear_backward",
            )?),
            _ => None,
        };
        let gb = if needs.len() > 2 && needs[2] {
            Some(
                g.data()
                    .sum(Some((1, rows, dout)), 1.0, "linear_backward")?,
            )
        } else {
            None
        };
        let mut grads: Grads = smallvec![
            gx.map(|d| Tensor::activation(d, self.x_shape.clone())),
            gw.map(|d| Tensor::activation(d, smallvec![dout, din]))
        ];
        if needs.len() > 2 {
            grads.push(gb.map(|d| Tensor::activation(d, smallvec![dout])));
        }
        Ok(grads)
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.x.iter().chain(self.w.iter()).for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
