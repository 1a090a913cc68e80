//! Reductions: sum and mean over everything or one dim, max over everything or one dim.
//! sum/mean backward spreads the gradient back (saves nothing); `max_dim` sends it to the
//! returned index and `max()` splits it evenly among equal maxima, as PyTorch does (both save
//! positions, not tensors).

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, Split};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::shape::{self, Shape};
use crate::tensor::Tensor;
use smallvec::smallvec;

/// What a reduction did, enough to spread the gradient back.
#[derive(Clone)]
struct Axis {
    shape: Shape,
    /// (outer, axis, inner) around the reduced dim; `None` reduced everything.
    split: Option<Split>,
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

static SUM: OpSpec = OpSpec::new("sum", "Sum").cast(Cast::Widen);
static MEAN: OpSpec = OpSpec::new("mean", "Mean").cast(Cast::Widen);
static SUM_DIM: OpSpec = OpSpec::new("sum_dim", "Sum").cast(Cast::Widen);
static MEAN_DIM: OpSpec = OpSpec::new("mean_dim", "Mean").cast(Cast::Widen);
static MAX: OpSpec = OpSpec::new("max", "Max");
static MAX_DIM: OpSpec = OpSpec::new("max_dim", "Max");

impl Tensor {
    /// Sum of all elements (a 0-dim tensor).
    pub fn sum(&self) -> Result<Tensor> {
        self.sum_mean_all(&SUM, false)
    }

    /// Mean of all elements (NaN for an empty tensor, as in PyTorch).
    pub fn mean(&self) -> Result<Tensor> {
        self.sum_mean_all(&MEAN, true)
    }

    fn sum_mean_all(&self, op: &'static OpSpec, mean: bool) -> Result<Tensor> {
        let scale = if mean { 1.0 / self.numel() as f64 } else { 1.0 };
        let axis = Axis {
            shape: self.shape().into(),
            split: None,
        };
        dispatch::apply(
            op,
            &[self],
            |x| {
                let out = x[0].data().sum(None, scale, op.name)?;
                Ok(Forward::from(Tensor::activation(out, Shape::new())))
            },
            |_, _| SumBackward { axis, scale },
        )
    }

    /// Sum over `dim`, keeping it as size 1 when `keepdim`.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.sum_mean_dim(&SUM_DIM, dim, keepdim, false)
    }

    /// Mean over `dim`, keeping it as size 1 when `keepdim`.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.sum_mean_dim(&MEAN_DIM, dim, keepdim, true)
    }

    fn sum_mean_dim(
        &self,
        op: &'static OpSpec,
        dim: isize,
        keepdim: bool,
        mean: bool,
    ) -> Result<Tensor> {
        let d = shape::dim(op.name, dim, self.rank())?;
        if self.rank() == 0 {
            return if mean { self.mean() } else { self.sum() };
        }
        let (o, a, i) = shape::split_at_axis(self.shape(), d);
        let scale = if mean { 1.0 / a as f64 } else { 1.0 };
        let axis = Axis {
            shape: self.shape().into(),
            split: Some((o, a, i)),
        };
        dispatch::apply(
            op,
            &[self],
            |x| {
                let out = x[0].data().sum(Some((o, a, i)), scale, op.name)?;
                Ok(Forward::from(Tensor::activation(
                    out,
                    out_shape(x[0].shape(), d, keepdim),
                )))
            },
            |_, _| SumBackward { axis, scale },
        )
    }

    /// Largest element (a 0-dim tensor); an error for an empty tensor.
    pub fn max(&self) -> Result<Tensor> {
        if self.numel() == 0 {
            return Err(Error::invalid(
                "max",
                "max(): Expected reduction dim to be specified for input.numel() == 0.",
            ));
        }
        let ties = std::cell::Cell::new(Vec::new());
        dispatch::apply(
            &MAX,
            &[self],
            |x| {
                let (out, t) = x[0].data().max_all()?;
                ties.set(t);
                Ok(Forward::from(Tensor::activation(out, Shape::new())))
            },
            |x, _| MaxAllBackward {
                shape: x[0].shape().into(),
                ties: ties.take(),
            },
        )
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
        let axis = Axis {
            shape: self.shape().into(),
            split: Some((o, a, i)),
        };
        let idx = std::cell::RefCell::new(Vec::new());
        let t = dispatch::apply(
            &MAX_DIM,
            &[self],
            |x| {
                let (out, positions) = x[0].data().max((o, a, i), "max_dim")?;
                *idx.borrow_mut() = positions;
                Ok(Forward::from(Tensor::activation(
                    out,
                    out_shape(x[0].shape(), d, keepdim),
                )))
            },
            |_, _| MaxBackward {
                axis,
                argmax: idx.borrow().clone(),
            },
        )?;
        Ok((t, idx.into_inner()))
    }
}

struct SumBackward {
    axis: Axis,
    scale: f64,
}

impl Backward for SumBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let n = shape::numel(&self.axis.shape);
        let out = g.data().spread(self.axis.split, n, self.scale)?;
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
        let out = g
            .data()
            .scatter_axis(&self.argmax, (o, a, i), "max_backward")?;
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
        let out = g.data().share(&self.ties, n, "max_backward")?;
        Ok(smallvec![Some(Tensor::activation(out, self.shape.clone()))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.ties.as_slice())
    }
}
