//! Fully connected layer y = x·Wᵀ + b.

use super::{ForwardHooks, Module, Parameters, uniform_param};
use crate::error::Result;
use crate::tensor::Tensor;

/// `Linear(in, out)` with PyTorch's default init: W, b ~ U(−1/√in, 1/√in).
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Tensor>,
    /// Hooks run on the output.
    pub hooks: ForwardHooks,
}

impl Linear {
    /// A layer drawn from the engine generator.
    pub fn new(input: usize, output: usize, bias: bool) -> Result<Linear> {
        let bound = 1.0 / (input.max(1) as f64).sqrt();
        let weight = uniform_param(&[output, input], bound)?;
        let bias = if bias {
            Some(uniform_param(&[output], bound)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            hooks: ForwardHooks::default(),
        })
    }
}

impl Parameters for Linear {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        p.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        p
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.linear(&self.weight, self.bias.as_ref())?;
        self.hooks.run(&y)?;
        Ok(y)
    }
}
