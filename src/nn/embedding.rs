//! Token embedding table.

use super::{ForwardHooks, Parameters};
use crate::error::Result;
use crate::indices::Indices;
use crate::tensor::Tensor;

/// `Embedding(num, dim)` with PyTorch's default init N(0, 1).
#[derive(Debug)]
pub struct Embedding {
    /// `[num, dim]`.
    pub weight: Tensor,
    /// Hooks run on the output (where `enable_input_require_grads` goes).
    pub hooks: ForwardHooks,
}

impl Embedding {
    /// A table drawn from the engine generator (zeros under [`super::SkipInit`]).
    pub fn new(num: usize, dim: usize) -> Result<Embedding> {
        let weight = match super::skipping_init() {
            true => Tensor::zeros(&[num, dim], crate::dtype::DType::F32)?,
            false => Tensor::randn(&[num, dim])?,
        }
        .requires_grad_(true)?;
        Ok(Embedding {
            weight,
            hooks: ForwardHooks::default(),
        })
    }

    /// Looks up `ids`: output `[ids.shape..., dim]`.
    pub fn forward(&self, ids: &Indices) -> Result<Tensor> {
        let y = self.weight.embedding(ids)?;
        self.hooks.run(&y)?;
        Ok(y)
    }

    /// HF's `enable_input_require_grads`: a hook making the output require grad, so a
    /// frozen embedding still feeds a grad path into reentrant checkpoint segments.
    pub fn enable_input_require_grads(&self) -> super::HookHandle {
        self.hooks
            .register(|out| out.requires_grad_(true).map(|_| ()))
    }
}

impl Parameters for Embedding {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
