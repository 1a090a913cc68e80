//! Layer normalisation over the last dim with learnable affine parameters.

use super::{ForwardHooks, Module, Parameters};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// `LayerNorm(dim)`: weight 1, bias 0, ε = 1e-5 (PyTorch's defaults).
#[derive(Debug)]
pub struct LayerNorm {
    /// `[dim]`, initialised to ones.
    pub weight: Tensor,
    /// `[dim]`, initialised to zeros.
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f64,
    /// Hooks run on the output.
    pub hooks: ForwardHooks,
}

impl LayerNorm {
    /// A fresh layer norm over `dim` features.
    pub fn new(dim: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Tensor::ones(&[dim], DType::F32)?.requires_grad_(true)?,
            bias: Tensor::zeros(&[dim], DType::F32)?.requires_grad_(true)?,
            eps: 1e-5,
            hooks: ForwardHooks::default(),
        })
    }
}

impl Parameters for LayerNorm {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)?;
        self.hooks.run(&y)?;
        Ok(y)
    }
}
