//! Ops that move elements without arithmetic: reshape (a view), permute/transpose, narrow
//! (slicing along a dim) and cat. Their backward moves the gradient back; none saves a tensor.

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, Copy2d};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::shape::{self, Shape, numel};
use crate::tensor::Tensor;
use smallvec::{SmallVec, smallvec};

static RESHAPE: OpSpec = OpSpec::new("reshape", "View");
static PERMUTE: OpSpec = OpSpec::new("permute", "Permute");
static NARROW: OpSpec = OpSpec::new("narrow", "Slice");
static CAT: OpSpec = OpSpec::new("cat", "Cat").cast(Cast::Promote);

impl Tensor {
    /// The same elements under a new shape (shares storage, like PyTorch's `view`).
    pub fn reshape(&self, new_shape: &[usize]) -> Result<Tensor> {
        if shape::checked_numel("reshape", new_shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: new_shape.to_vec(),
            });
        }
        dispatch::apply(
            &RESHAPE,
            &[self],
            |t| {
                let view = Tensor::from_parts(t[0].storage().clone(), new_shape.into(), false);
                Ok(Forward::from(view))
            },
            |t, _| ReshapeBackward {
                shape: t[0].shape().into(),
            },
        )
    }

    /// Reorders dims: output dim i is input dim `dims[i]` (a copy).
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if dims.len() != rank
            || dims
                .iter()
                .any(|&d| d >= rank || std::mem::replace(&mut seen[d], true))
        {
            return Err(Error::invalid(
                "permute",
                format!("{dims:?} is not a permutation of {rank} dims"),
            ));
        }
        let out_shape: Shape = dims.iter().map(|&d| self.shape()[d]).collect();
        let mut inverse: SmallVec<[usize; 4]> = smallvec![0; rank];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        dispatch::apply(
            &PERMUTE,
            &[self],
            |t| {
                let out = t[0].data().permute(t[0].shape(), dims)?;
                Ok(Forward::from(Tensor::activation(out, out_shape)))
            },
            |_, _| PermuteBackward { inverse },
        )
    }

    /// Swaps two dims (a copy).
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        let (a, b) = (
            shape::dim("transpose", d0, self.rank())?,
            shape::dim("transpose", d1, self.rank())?,
        );
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Elements `start..start+len` along `dim` (a copy).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::invalid(
                "narrow",
                "narrow() cannot be applied to a 0-dim tensor.",
            ));
        }
        let d = shape::dim("narrow", dim, self.rank())?;
        let size = self.shape()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::IndexOutOfRange {
                op: "narrow",
                index: i64::try_from(start.saturating_add(len)).unwrap_or(i64::MAX),
                size,
            });
        }
        let (outer, _, inner) = shape::split_at_axis(self.shape(), d);
        let mut out_shape: Shape = self.shape().into();
        out_shape[d] = len;
        dispatch::apply(
            &NARROW,
            &[self],
            |t| {
                let n = outer * len * inner;
                let mut out = t[0].data().zeros(t[0].dtype(), n, "narrow")?;
                if n > 0 {
                    let block = Copy2d {
                        rows: outer,
                        width: len * inner,
                        src_stride: size * inner,
                        src_at: start * inner,
                        dst_stride: len * inner,
                        dst_at: 0,
                    };
                    t[0].data().copy2d(&mut out, block, false)?;
                }
                Ok(Forward::from(Tensor::activation(out, out_shape)))
            },
            |t, _| NarrowBackward {
                shape: t[0].shape().into(),
                dim: d,
                start,
            },
        )
    }

    /// Concatenates tensors along `dim`; all other dims must agree.
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("cat", "expected a non-empty list of tensors"))?;
        if let Some(i) = tensors.iter().position(|t| t.rank() == 0) {
            return Err(Error::invalid(
                "cat",
                format!("zero-dimensional tensor (at position {i}) cannot be concatenated"),
            ));
        }
        let d = shape::dim("cat", dim, first.rank())?;
        for t in tensors {
            let ok = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
        let mut out_shape = first.shape().to_vec();
        out_shape[d] = sizes
            .iter()
            .try_fold(0usize, |a, &s| a.checked_add(s))
            .unwrap_or(usize::MAX);
        let n = shape::checked_numel("cat", &out_shape)?;
        let total = out_shape[d];
        let (outer, _, inner) = shape::split_at_axis(first.shape(), d);
        let cat_sizes = sizes.clone();
        dispatch::apply(
            &CAT,
            tensors,
            |ts| {
                for t in ts {
                    crate::ops::same_dtype("cat", ts[0], t)?;
                }
                let mut out = ts[0].data().zeros(ts[0].dtype(), n, "cat")?;
                let mut offset = 0;
                // An empty result copies nothing (its outer count may still be huge).
                for (t, &len) in ts.iter().zip(&cat_sizes).filter(|_| n > 0) {
                    let block = Copy2d {
                        rows: outer,
                        width: len * inner,
                        src_stride: len * inner,
                        src_at: 0,
                        dst_stride: total * inner,
                        dst_at: offset * inner,
                    };
                    t.data().copy2d(&mut out, block, false)?;
                    offset += len;
                }
                Ok(Forward::from(Tensor::activation(out, out_shape.into())))
            },
            |_, _| CatBackward { dim: d, sizes },
        )
    }
}

struct ReshapeBackward {
    shape: Shape,
}

impl Backward for ReshapeBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        Ok(smallvec![Some(Tensor::from_parts(
            g.storage().clone(),
            self.shape.clone(),
            false
        ))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

struct PermuteBackward {
    inverse: SmallVec<[usize; 4]>,
}

impl Backward for PermuteBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let out = g.data().permute(g.shape(), &self.inverse)?;
        let shape: Shape = self.inverse.iter().map(|&d| g.shape()[d]).collect();
        Ok(smallvec![Some(Tensor::activation(out, shape))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

struct NarrowBackward {
    shape: Shape,
    dim: usize,
    start: usize,
}

impl NarrowBackward {
    /// The gradient's `rows` rows of `width` into rows of `stride` at the slice's start.
    fn block(&self, rows: usize, width: usize, stride: usize) -> Copy2d {
        let inner = stride / self.shape[self.dim].max(1);
        Copy2d {
            rows,
            width,
            src_stride: width,
            src_at: 0,
            dst_stride: stride,
            dst_at: self.start * inner,
        }
    }
}

impl Backward for NarrowBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (outer, size, inner) = shape::split_at_axis(&self.shape, self.dim);
        let len = g.shape()[self.dim];
        let mut out = g
            .data()
            .zeros(g.dtype(), numel(&self.shape), "narrow_backward")?;
        if out.len() > 0 {
            g.data().copy2d(
                &mut out,
                self.block(outer, len * inner, size * inner),
                false,
            )?;
        }
        Ok(smallvec![Some(Tensor::activation(out, self.shape.clone()))])
    }
    fn adds_in_place(&self) -> bool {
        true
    }
    fn add_into(&self, g: &Tensor, acc: &Tensor) -> Result<bool> {
        // acc[block at start] += g, the rest unchanged: the same sums as adding the zero-padded
        // gradient, without writing or reading the zeros.
        if acc.shape() != self.shape.as_slice() {
            return Ok(false);
        }
        let (outer, size, inner) = shape::split_at_axis(&self.shape, self.dim);
        let width = g.shape()[self.dim] * inner;
        let block = self.block(outer, width, size * inner);
        g.data()
            .copy2d(&mut acc.storage().borrow_mut(), block, true)?;
        Ok(true)
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

struct CatBackward {
    dim: usize,
    sizes: Vec<usize>,
}

impl Backward for CatBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let mut grads = Grads::new();
        let mut start = 0;
        for (&len, &need) in self.sizes.iter().zip(needs) {
            grads.push(if need {
                Some(g.narrow(self.dim as isize, start, len)?)
            } else {
                None
            });
            start += len;
        }
        Ok(grads)
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
