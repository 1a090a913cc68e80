//! Dropout layer with a train/eval switch.

use super::{Module, Parameters};
use crate::error::Result;
use crate::tensor::Tensor;
use std::cell::Cell;

/// `Dropout(p)`: active in training mode, the identity in eval mode.
#[derive(Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    training: Cell<bool>,
}

impl Dropout {
    /// A dropout layer in training mode.
    pub fn new(p: f64) -> Dropout {
        Dropout {
            p,
            training: Cell::new(true),
        }
    }

    /// Switches between training (true) and eval (false).
    pub fn train(&self, on: bool) {
        self.training.set(on);
    }
}

impl Parameters for Dropout {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.dropout(self.p, self.training.get())
    }
}
