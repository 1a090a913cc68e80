//! Ops that move elements without arithmetic: reshape (a view), permute/transpose, narrow
//! (slicing along a dim) and cat. Their backward moves the gradient back; none saves a tensor.

use crate::autograd::{Backward, Grads};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::shape::{self, Shape, numel, strides};
use crate::storage::{Buffer, IntoBuffer};
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
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
                let out = permute_buffer(&t[0].data(), t[0].shape(), dims);
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
                let out = with_buffer!(&*t[0].data(), v => {
                    let mut o = Vec::with_capacity(outer * len * inner);
                    for r in (0..outer).filter(|_| len * inner > 0) {
                        let base = (r * size + start) * inner;
                        o.extend_from_slice(&v[base..base + len * inner]);
                    }
                    o.into_buffer()
                });
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
                let mut out = Buffer::zeros("cat", ts[0].dtype(), n)?;
                let mut offset = 0;
                // An empty result copies nothing (its outer count may still be huge).
                for (t, &len) in ts.iter().zip(&cat_sizes).filter(|_| n > 0) {
                    copy_block(
                        &t.data(),
                        &mut out,
                        outer,
                        len * inner,
                        total * inner,
                        offset * inner,
                    );
                    offset += len;
                }
                Ok(Forward::from(Tensor::activation(out, out_shape.into())))
            },
            |_, _| CatBackward { dim: d, sizes },
        )
    }
}

/// Copies `outer` rows of `width` elements from `src` into `dst` rows of `dst_width` at `at`.
fn copy_block(
    src: &Buffer,
    dst: &mut Buffer,
    outer: usize,
    width: usize,
    dst_width: usize,
    at: usize,
) {
    crate::zip_buffers!("cat", src, dst, s, d => copy_rows(s, d, outer, width, dst_width, at))
        .expect("cat and narrow check dtypes first");
}

fn copy_rows<E: Copy>(
    s: &[E],
    d: &mut [E],
    outer: usize,
    width: usize,
    dst_width: usize,
    at: usize,
) {
    for r in 0..outer {
        d[r * dst_width + at..r * dst_width + at + width]
            .copy_from_slice(&s[r * width..(r + 1) * width]);
    }
}

fn permute_buffer(data: &Buffer, shape: &[usize], dims: &[usize]) -> Buffer {
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let src_strides: Vec<usize> = dims.iter().map(|&d| in_strides[d]).collect();
    // One output row (last dim) at a time: a slice copy when the last dim stays innermost,
    // else a strided gather.
    let w = out_shape.last().copied().unwrap_or(1).max(1);
    let step = src_strides.last().copied().unwrap_or(1);
    with_buffer!(data, v => {
        let mut out = vec![Default::default(); v.len()];
        crate::cpu::rows_mut(&mut out, w, |r, row| {
            let base = crate::cpu::row_base(r, &out_shape, &src_strides);
            if step == 1 {
                row.copy_from_slice(&v[base..base + row.len()]);
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = v[base + j * step];
                }
            }
        });
        out.into_buffer()
    })
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
        let out = permute_buffer(&g.data(), g.shape(), &self.inverse);
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

impl Backward for NarrowBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (outer, size, inner) = shape::split_at_axis(&self.shape, self.dim);
        let len = g.shape()[self.dim];
        let mut out = Buffer::zeros("expand_backward", g.dtype(), numel(&self.shape))?;
        copy_block(
            &g.data(),
            &mut out,
            outer,
            len * inner,
            size * inner,
            self.start * inner,
        );
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
        let src = g.data();
        let mut dst = acc.storage().borrow_mut();
        zip_buffers!("narrow_backward", &mut *dst, &*src, d, s => {
            for r in 0..outer {
                let at = r * size * inner + self.start * inner;
                crate::cpu::zip_assign(
                    &mut d[at..at + width],
                    &s[r * width..(r + 1) * width],
                    #[inline(always)]
                    |x, y| x + y,
                );
            }
        })?;
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
