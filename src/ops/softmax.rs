//! softmax and log_softmax along one dim, numerically stabilised by the row max.
//! softmax: dx = y ⊙ (g − Σ g⊙y). log_softmax: dx = g − eʸ·Σ g. Both save their output.

use crate::autograd::{Backward, Grads};
use crate::dtype::Element;
use crate::error::Result;
use crate::ops::save;
use crate::shape;
use crate::storage::IntoBuffer;
use crate::tape::record;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use num_traits::{Float, Zero};
use smallvec::smallvec;

fn forward<E: Element>(x: &[E], o: usize, a: usize, i: usize, log: bool) -> Vec<E> {
    let mut out = vec![E::default(); x.len()];
    let mut col = vec![E::C::zero(); a];
    for r in 0..o {
        for c in 0..i {
            let at = |k: usize| (r * a + k) * i + c;
            let m = (0..a)
                .map(|k| x[at(k)].to_c())
                .fold(E::C::neg_infinity(), |m, v| {
                    if v > m || v.is_nan() { v } else { m }
                });
            let mut s = E::C::zero();
            for (k, slot) in col.iter_mut().enumerate() {
                *slot = x[at(k)].to_c() - m;
                s += slot.exp();
            }
            let ls = s.ln();
            for (k, &z) in col.iter().enumerate() {
                out[at(k)] = E::from_c(if log { z - ls } else { z.exp() / s });
            }
        }
    }
    out
}

fn backward<E: Element>(g: &[E], y: &[E], o: usize, a: usize, i: usize, log: bool) -> Vec<E> {
    let mut out = vec![E::default(); g.len()];
    for r in 0..o {
        for c in 0..i {
            let at = |k: usize| (r * a + k) * i + c;
            if log {
                let s: E::C = (0..a).map(|k| g[at(k)].to_c()).sum();
                for k in 0..a {
                    out[at(k)] = E::from_c(g[at(k)].to_c() - y[at(k)].to_c().exp() * s);
                }
            } else {
                let s: E::C = (0..a).map(|k| g[at(k)].to_c() * y[at(k)].to_c()).sum();
                for k in 0..a {
                    out[at(k)] = E::from_c(y[at(k)].to_c() * (g[at(k)].to_c() - s));
                }
            }
        }
    }
    out
}

impl Tensor {
    /// eˣ / Σ eˣ along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl("softmax", dim, false)
    }

    /// x − log Σ eˣ along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl("log_softmax", dim, true)
    }

    fn softmax_impl(&self, op: &'static str, dim: isize, log: bool) -> Result<Tensor> {
        let x = crate::ops::autocast::widen(self)?;
        x.softmax_kernel(op, dim, log)
    }

    fn softmax_kernel(&self, op: &'static str, dim: isize, log: bool) -> Result<Tensor> {
        let d = shape::dim(op, dim, self.rank())?;
        let split = if self.rank() == 0 {
            (1, 1, 1)
        } else {
            shape::split_at_axis(self.shape(), d)
        };
        let (o, a, i) = split;
        let out = with_buffer!(&*self.data(), v => forward(v, o, a, i, log).into_buffer());
        Ok(record(
            op,
            &[self],
            Tensor::activation(out, self.shape().into()),
            |y| SoftmaxBackward {
                split,
                log,
                y: save(y),
            },
        ))
    }
}

struct SoftmaxBackward {
    split: (usize, usize, usize),
    log: bool,
    /// Saves: the output.
    y: Tensor,
}

impl Backward for SoftmaxBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (o, a, i) = self.split;
        let out = zip_buffers!("softmax_backward", &*g.data(), &*self.y.data(), gv, yv => backward(gv, yv, o, a, i, self.log).into_buffer())?;
        Ok(smallvec![Some(Tensor::activation(out, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.y);
    }
}
