//! Integer index tensors (token ids, class labels): data for embedding lookups and losses,
//! never differentiated.

use crate::error::{Error, Result};
use crate::shape::Shape;

/// A shaped array of `i64` indices (PyTorch's `LongTensor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indices {
    data: Vec<i64>,
    shape: Shape,
}

impl Indices {
    /// Indices with a shape; the element count must match.
    pub fn new(data: Vec<i64>, shape: &[usize]) -> Result<Indices> {
        if data.len() != crate::shape::checked_numel("Indices::new", shape)? {
            return Err(Error::invalid(
                "Indices::new",
                format!("{} indices cannot have shape {shape:?}", data.len()),
            ));
        }
        Ok(Indices {
            data,
            shape: shape.into(),
        })
    }

    /// A 1-D array of indices.
    pub fn from_slice(data: &[i64]) -> Indices {
        Indices {
            data: data.to_vec(),
            shape: smallvec::smallvec![data.len()],
        }
    }

    /// The indices, row-major.
    pub fn data(&self) -> &[i64] {
        &self.data
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there is no index.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
