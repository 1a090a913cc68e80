//! softmax and log_softmax along one dim, numerically stabilised by the row max.
//! softmax: dx = y ⊙ (g − Σ g⊙y). log_softmax: dx = g − eʸ·Σ g. Both save their output.

use crate::autograd::{Backward, Grads};
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::{Cast, OpSpec};
use crate::shape;
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use num_traits::{Float, Zero};
use smallvec::smallvec;

/// Rows up to this long keep their exponentials on the stack (computed once).
const STACK_ROW: usize = 1024;

/// One contiguous row: y = e^(x−m) / Σ, or x − m − log Σ. The exponentials are the kernels'
/// (`exp_k`) and the sum runs in lanes (`cpu::lane_sum`): one vectorised pass, the same bits
/// on every CPU.
pub(crate) fn forward_row<E: Element>(x: &[E], out: &mut [E], log: bool) {
    crate::cpu::simd(
        #[inline(always)]
        || {
            let m = x
                .iter()
                .map(|v| v.to_c())
                .fold(E::C::neg_infinity(), |m, v| {
                    if v > m || v.is_nan() { v } else { m }
                });
            let mut col = [E::C::zero(); STACK_ROW];
            let s = if x.len() <= STACK_ROW {
                for (c, v) in col.iter_mut().zip(x) {
                    *c = (v.to_c() - m).exp_k();
                }
                crate::cpu::lane_sum(x.len(), |k| col[k])
            } else {
                crate::cpu::lane_sum(x.len(), |k| (x[k].to_c() - m).exp_k())
            };
            let ls = s.ln();
            let keep = x.len() <= STACK_ROW;
            for (k, (o, v)) in out.iter_mut().zip(x).enumerate() {
                let z = v.to_c() - m;
                *o = E::from_c(if log {
                    z - ls
                } else if keep {
                    col[k] / s
                } else {
                    z.exp_k() / s
                });
            }
        },
    )
}

fn forward<E: Element>(x: &[E], o: usize, a: usize, i: usize, log: bool) -> Vec<E> {
    if x.is_empty() {
        return Vec::new(); // `o · i` may still be huge when the axis is empty
    }
    let mut out = vec![E::default(); x.len()];
    if i == 1 {
        crate::cpu::rows_mut(&mut out, a, |r, row| {
            forward_row(&x[r * a..(r + 1) * a], row, log)
        });
        return out;
    }
    let (mut col, mut res) = (vec![E::default(); a], vec![E::default(); a]);
    for r in 0..o {
        for c in 0..i {
            let at = |k: usize| (r * a + k) * i + c;
            for (k, slot) in col.iter_mut().enumerate() {
                *slot = x[at(k)];
            }
            forward_row(&col, &mut res, log);
            for (k, &v) in res.iter().enumerate() {
                out[at(k)] = v;
            }
        }
    }
    out
}

/// One row of the adjoint (`g`, `y` and `out` read with stride `i`).
pub(crate) fn backward_row<E: Element>(g: &[E], y: &[E], out: &mut [E], log: bool) {
    crate::cpu::simd(
        #[inline(always)]
        || {
            if log {
                let s = crate::cpu::lane_sum(g.len(), |k| g[k].to_c());
                for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                    *o = E::from_c(g.to_c() - y.to_c().exp_k() * s);
                }
            } else {
                let s = crate::cpu::lane_sum(g.len(), |k| g[k].to_c() * y[k].to_c());
                for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                    *o = E::from_c(y.to_c() * (g.to_c() - s));
                }
            }
        },
    )
}

fn backward<E: Element>(g: &[E], y: &[E], o: usize, a: usize, i: usize, log: bool) -> Vec<E> {
    if g.is_empty() {
        return Vec::new();
    }
    let mut out = vec![E::default(); g.len()];
    if i == 1 {
        crate::cpu::rows_mut(&mut out, a, |r, row| {
            let span = r * a..(r + 1) * a;
            backward_row(&g[span.clone()], &y[span], row, log)
        });
        return out;
    }
    let (mut gc, mut yc, mut res) = (
        vec![E::default(); a],
        vec![E::default(); a],
        vec![E::default(); a],
    );
    for r in 0..o {
        for c in 0..i {
            let at = |k: usize| (r * a + k) * i + c;
            for k in 0..a {
                gc[k] = g[at(k)];
                yc[k] = y[at(k)];
            }
            backward_row(&gc, &yc, &mut res, log);
            for (k, &v) in res.iter().enumerate() {
                out[at(k)] = v;
            }
        }
    }
    out
}

static SOFTMAX: OpSpec = OpSpec::new("softmax", "Softmax").cast(Cast::Widen);
static LOG_SOFTMAX: OpSpec = OpSpec::new("log_softmax", "LogSoftmax").cast(Cast::Widen);

impl Tensor {
    /// eˣ / Σ eˣ along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(&SOFTMAX, dim, false)
    }

    /// x − log Σ eˣ along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(&LOG_SOFTMAX, dim, true)
    }

    fn softmax_impl(&self, op: &'static OpSpec, dim: isize, log: bool) -> Result<Tensor> {
        let d = shape::dim(op.name, dim, self.rank())?;
        let split = if self.rank() == 0 {
            (1, 1, 1)
        } else {
            shape::split_at_axis(self.shape(), d)
        };
        dispatch::apply(
            op,
            &[self],
            |x| Ok(Forward::from(softmax_kernel(x[0], split, log))),
            |_, y| SoftmaxBackward {
                split,
                log,
                y: save(y),
            },
        )
    }
}

/// softmax or log_softmax of `x` over the middle of `split`, not recorded.
pub(crate) fn softmax_kernel(x: &Tensor, split: (usize, usize, usize), log: bool) -> Tensor {
    let (o, a, i) = split;
    let out = with_buffer!(&*x.data(), v => forward(v, o, a, i, log).into_buffer());
    Tensor::activation(out, x.shape().into())
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
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
