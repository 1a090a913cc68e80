//! Embedding lookup: row `ids[j]` of the weight. Backward scatter-adds the output gradient
//! into the rows that were read: `dW[ids[j]] += g[j]`, except the `padding_idx` row, which
//! gets none (PyTorch's `padding_idx`). Saves: the ids (not a tensor).

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::shape::Shape;
use crate::tensor::Tensor;
use smallvec::smallvec;

impl Tensor {
    /// Looks up rows of this `[num_embeddings, dim]` weight: output `[ids.shape..., dim]`.
    pub fn embedding(&self, ids: &Indices) -> Result<Tensor> {
        self.embedding_padded(ids, None)
    }

    /// [`Tensor::embedding`] whose row `padding_idx` gets no gradient.
    pub fn embedding_padded(&self, ids: &Indices, padding_idx: Option<usize>) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid(
                "embedding",
                format!("weight must be 2-D, got {:?}", self.shape()),
            ));
        }
        let (v, d) = (self.shape()[0], self.shape()[1]);
        if let Some(p) = padding_idx
            && p >= v
        {
            return Err(Error::IndexOutOfRange {
                op: "embedding",
                index: i64::try_from(p).unwrap_or(i64::MAX),
                size: v,
            });
        }
        for &i in ids.data() {
            if i < 0 || i as usize >= v {
                return Err(Error::IndexOutOfRange {
                    op: "embedding",
                    index: i,
                    size: v,
                });
            }
        }
        let mut shape: Shape = ids.shape().into();
        shape.push(d);
        crate::shape::checked_numel("embedding", &shape)?;
        dispatch::apply(
            &EMBEDDING,
            &[self],
            |t| {
                let out = t[0].data().index_select(ids.data(), d)?;
                Ok(Forward::from(Tensor::activation(out, shape)))
            },
            |t, _| EmbeddingBackward {
                ids: ids.data().to_vec(),
                weight_shape: t[0].shape().into(),
                padding_idx: padding_idx.map(|p| p as i64),
            },
        )
    }
}

static EMBEDDING: OpSpec = OpSpec::new("embedding", "Embedding");

struct EmbeddingBackward {
    ids: Vec<i64>,
    weight_shape: Shape,
    padding_idx: Option<i64>,
}

impl Backward for EmbeddingBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let (rows, d) = (self.weight_shape[0], self.weight_shape[1]);
        let out = g.data().index_add(&self.ids, (rows, d), self.padding_idx)?;
        Ok(smallvec![Some(Tensor::activation(
            out,
            self.weight_shape.clone()
        ))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        std::mem::size_of_val(self.ids.as_slice())
    }
}
