//! Reductions: sum and mean over everything or one dim, max over everything or one dim.
//! sum/mean backward spreads the gradient back (saves nothing); `max_dim` sends it to the
//! returned index and `max()` splits it evenly among equal maxima, as PyTorch does (both save
//! positions, not tensors).

use crate::autograd::{Backward, Grads};
use crate::cpu::reduce::{max_axis, sum_all, sum_axis};
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::shape::{self, Shape};
use crate::storage::{Buffer, IntoBuffer};
use crate::tape::record;
use crate::tensor::Tensor;
use crate::with_buffer;
use smallvec::smallvec;

/// What a reduction did, enough to spread the gradient back.
#[derive(Clone)]
struct Axis {
    shape: Shape,
    /// (outer, axis, inner) around the reduced dim; `None` reduced everything.
    split: Option<(usize, usize, usize)>,
}

fn out_shape(shape: &[usize], d: usize, keepdim: bool) -> Shape {
    let mut s: Shape = shape.into();
    if keepdim {
        s[d] = 1;
    } else {
        s.remove(d);
    }
    s
}

fn scaled<E: Element>(v: Vec<E>, scale: f64) -> Vec<E> {
    if scale == 1.0 {
        return v;
    }
    v.into_iter()
        .map(|x| E::from_c(x.to_c() * <E::C as Real>::c(scale)))
        .collect()
}

fn total<E: Element>(v: &[E]) -> E {
    E::from_c(sum_all(v))
}

impl Tensor {
    /// Sum of all elements (a 0-dim tensor).
    pub fn sum(&self) -> Result<Tensor> {
        crate::ops::autocast::widen(self)?.sum_mean_all("sum", 1.0)
    }

    /// Mean of all elements (NaN for an empty tensor, as in PyTorch).
    pub fn mean(&self) -> Result<Tensor> {
        crate::ops::autocast::widen(self)?.sum_mean_all("mean", 1.0 / self.numel() as f64)
    }

    fn sum_mean_all(&self, op: &'static str, scale: f64) -> Result<Tensor> {
        let out = with_buffer!(&*self.data(), v => scaled(vec![total(v)], scale).into_buffer());
        let axis = Axis {
            shape: self.shape().into(),
            split: None,
        };
        Ok(record(
            op,
            &[self],
            Tensor::activation(out, Shape::new()),
            |_| SumBackward { axis, scale },
        ))
    }

    /// Sum over `dim`, keeping it as size 1 when `keepdim`.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        crate::ops::autocast::widen(self)?.sum_mean_dim("sum_dim", dim, keepdim, false)
    }

    /// Mean over `dim`, keeping it as size 1 when `keepdim`.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        crate::ops::autocast::widen(self)?.sum_mean_dim("mean_dim", dim, keepdim, true)
    }

    fn sum_mean_dim(
        &self,
        op: &'static str,
        dim: isize,
        keepdim: bool,
        mean: bool,
    ) -> Result<Tensor> {
        let d = shape::dim(op, dim, self.rank())?;
        if self.rank() == 0 {
            return if mean { self.mean() } else { self.sum() };
        }
        let (o, a, i) = shape::split_at_axis(self.shape(), d);
        let scale = if mean { 1.0 / a as f64 } else { 1.0 };
        let out = with_buffer!(&*self.data(), v => scaled(sum_axis(op, v, o, a, i)?, scale).into_buffer());
        let axis = Axis {
            shape: self.shape().into(),
            split: Some((o, a, i)),
        };
        Ok(record(
            op,
            &[self],
            Tensor::activation(out, out_shape(self.shape(), d, keepdim)),
            |_| SumBackward { axis, scale },
        ))
    }

    /// Largest element (a 0-dim tensor); an error for an empty tensor.
    pub fn max(&self) -> Result<Tensor> {
        if self.numel() == 0 {
            return Err(Error::invalid(
                "max",
                "max(): Expected reduction dim to be specified for input.numel() == 0.",
            ));
        }
        let (out, ties) = with_buffer!(&*self.data(), v => {
            let (vals, _) = max_axis("max", v, 1, v.len(), 1)?;
            let m = vals[0].to_c();
            // PyTorch's evenly_distribute_backward: every element equal to the result (every NaN
            // when the result is NaN) shares the gradient.
            let ties: Vec<usize> = (0..v.len())
                .filter(|&k| {
                    let x = v[k].to_c();
                    x == m || (m.is_nan() && x.is_nan())
                })
                .collect();
            (vals.into_buffer(), ties)
        });
        Ok(record(
            "max",
            &[self],
            Tensor::activation(out, Shape::new()),
            |_| MaxAllBackward {
                shape: self.shape().into(),
                ties,
            },
        ))
    }

    /// Largest element along `dim` and the index of its first occurrence.
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor, Vec<usize>)> {
        let d = shape::dim("max_dim", dim, self.rank())?;
        if self.rank() == 0 {
            return Ok((self.reshape(&[])?, vec![0]));
        }
        let (o, a, i) = shape::split_at_axis(self.shape(), d);
        if a == 0 {
            return Err(Error::invalid(
                "max_dim",
                "cannot take the max over a dim of size 0",
            ));
        }
        let (out, idx) = with_buffer!(&*self.data(), v => {
            let (vals, idx) = max_axis("max_dim", v, o, a, i)?;
            (vals.into_buffer(), idx)
        });
        let axis = Axis {
            shape: self.shape().into(),
            split: Some((o, a, i)),
        };
        let t = record(
            "max_dim",
            &[self],
            Tensor::activation(out, out_shape(self.shape(), d, keepdim)),
            |_| MaxBackward {
                axis,
                argmax: idx.clone(),
            },
        );
        Ok((t, idx))
    }
}

struct SumBackward {
    axis: Axis,
    scale: f64,
}

impl Backward for SumBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let n = shape::numel(&self.axis.shape);
        let out = with_buffer!(&*g.data(), gv => {
            let gv = scaled(gv.clone(), self.scale);
            match self.axis.split {
                _ if n == 0 => gv[..0].to_vec().into_buffer(),
                None => vec![gv[0]; n].into_buffer(),
                Some((o, a, i)) => {
                    let mut out = Vec::with_capacity(n);
                    for r in 0..o {
                        for _ in 0..a {
                            out.extend_from_slice(&gv[r * i..(r + 1) * i]);
                        }
                    }
                    out.into_buffer()
                }
            }
        });
        Ok(smallvec![Some(Tensor::activation(
            out,
            self.axis.shape.clone()
        ))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

struct MaxBackward {
    axis: Axis,
    /// Saves: the position of the maximum for each output element (not a tensor).
    argmax: Vec<usize>,
}

impl Backward for MaxBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (o, a, i) = self.axis.split.expect("max always reduces one dim");
        let mut out = Buffer::zeros("max_backward", g.dtype(), o * a * i)?;
        match (&*g.data(), &mut out) {
            (Buffer::F16(s), Buffer::F16(d)) => scatter(s, d, &self.argmax, a, i),
            (Buffer::F32(s), Buffer::F32(d)) => scatter(s, d, &self.argmax, a, i),
            (Buffer::F64(s), Buffer::F64(d)) => scatter(s, d, &self.argmax, a, i),
            _ => unreachable!("zeros were made with g's dtype"),
        }
        Ok(smallvec![Some(Tensor::activation(
            out,
            self.axis.shape.clone()
        ))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.argmax.as_slice())
    }
}

struct MaxAllBackward {
    shape: Shape,
    /// Saves: the positions of every element equal to the maximum (not a tensor).
    ties: Vec<usize>,
}

impl Backward for MaxAllBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let n = shape::numel(&self.shape);
        let mut out = Buffer::zeros("max_backward", g.dtype(), n)?;
        let count = self.ties.len() as f64;
        match (&*g.data(), &mut out) {
            (Buffer::F16(s), Buffer::F16(d)) => share(s[0], d, &self.ties, count),
            (Buffer::F32(s), Buffer::F32(d)) => share(s[0], d, &self.ties, count),
            (Buffer::F64(s), Buffer::F64(d)) => share(s[0], d, &self.ties, count),
            _ => unreachable!("zeros were made with g's dtype"),
        }
        Ok(smallvec![Some(Tensor::activation(out, self.shape.clone()))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.ties.as_slice())
    }
}

/// `g / count` into every tie position.
fn share<E: Element>(g: E, out: &mut [E], ties: &[usize], count: f64) {
    let v = E::from_c(g.to_c() / <E::C as Real>::c(count));
    for &k in ties {
        out[k] = v;
    }
}

fn scatter<E: Copy>(g: &[E], out: &mut [E], argmax: &[usize], a: usize, inner: usize) {
    for (k, (&v, &at)) in g.iter().zip(argmax).enumerate() {
        let (r, i) = (k / inner.max(1), k % inner.max(1));
        out[(r * a + at) * inner + i] = v;
    }
}
