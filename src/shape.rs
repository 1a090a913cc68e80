//! Shape arithmetic: element counts, strides, broadcasting and dimension normalisation.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// A tensor's dimensions, stored inline for ranks up to 4.
pub type Shape = SmallVec<[usize; 4]>;

/// The most elements a tensor may have: 2^60, so that element counts, strides and byte sizes
/// (up to 8 bytes an element) of every valid shape fit in `isize` without overflow.
pub const MAX_ELEMENTS: usize = 1 << 60;

/// Number of elements of a shape (1 for a scalar). Only for shapes already validated by
/// [`checked_numel`] (every tensor's shape is): on others the product may wrap.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Number of elements of a shape, refusing shapes whose extent (the product of its non-zero
/// dims, which bounds every stride) exceeds [`MAX_ELEMENTS`].
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let mut extent = 1usize;
    let mut zero = false;
    for &d in shape {
        zero |= d == 0;
        extent = extent
            .checked_mul(d.max(1))
            .filter(|&e| e <= MAX_ELEMENTS)
            .ok_or_else(|| Error::ShapeTooLarge {
                op,
                shape: shape.to_vec(),
            })?;
    }
    Ok(if zero { 0 } else { extent })
}

/// Row-major strides of a contiguous tensor.
pub fn strides(shape: &[usize]) -> Shape {
    let mut s: Shape = smallvec::smallvec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// NumPy broadcasting of two shapes.
pub fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape> {
    if a == b {
        return Ok(a.into()); // a tensor's shape, valid already
    }
    let rank = a.len().max(b.len());
    let mut out: Shape = smallvec::smallvec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                });
            }
        };
    }
    checked_numel(op, &out)?;
    Ok(out)
}

/// Strides for reading a tensor of shape `from` as if broadcast to `to` (0 on broadcast dims).
pub fn broadcast_strides(from: &[usize], to: &[usize]) -> Shape {
    let own = strides(from);
    let pad = to.len() - from.len();
    (0..to.len())
        .map(|i| {
            if i < pad || from[i - pad] == 1 {
                0
            } else {
                own[i - pad]
            }
        })
        .collect()
}

/// Resolves a possibly negative dimension against `rank`.
pub fn dim(op: &'static str, d: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let idx = if d < 0 { d + r } else { d };
    if idx < 0 || idx >= r.max(1) || (rank == 0 && idx != 0) {
        return Err(Error::DimOutOfRange { op, dim: d, rank });
    }
    Ok(idx as usize)
}

/// Splits `shape` around `axis` into (outer, axis length, inner) element counts.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}
