//! A stack of residual MLP blocks, x ↦ x + W₂·gelu(W₁x + b₁) + b₂: the workload of the
//! recompute-vs-store benchmarks (16 blocks of 256→1024→256 on 2048 rows in the reference).

use super::{Linear, Module, Parameters, prefixed};
use crate::error::Result;
use crate::tensor::Tensor;
use std::rc::Rc;

/// One residual block.
#[derive(Debug)]
pub struct MlpBlock {
    /// d → hidden.
    pub fc1: Linear,
    /// hidden → d.
    pub fc2: Linear,
}

impl MlpBlock {
    /// A block drawn from the engine generator.
    pub fn new(d: usize, hidden: usize) -> Result<MlpBlock> {
        Ok(MlpBlock {
            fc1: Linear::new(d, hidden, true)?,
            fc2: Linear::new(hidden, d, true)?,
        })
    }
}

impl Parameters for MlpBlock {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("fc1", self.fc1.named_parameters());
        p.extend(prefixed("fc2", self.fc2.named_parameters()));
        p
    }
}

impl Module for MlpBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu()?)?.add(x)
    }
}

/// `depth` residual blocks of width `d` with hidden size `hidden`.
#[derive(Debug)]
pub struct ResidualMlp {
    /// The blocks, applied in order (shared handles, so checkpoint bodies can hold them).
    pub blocks: Vec<Rc<MlpBlock>>,
}

impl ResidualMlp {
    /// A stack drawn from the engine generator.
    pub fn new(depth: usize, d: usize, hidden: usize) -> Result<ResidualMlp> {
        Ok(ResidualMlp {
            blocks: (0..depth)
                .map(|_| MlpBlock::new(d, hidden).map(Rc::new))
                .collect::<Result<_>>()?,
        })
    }

    /// The blocks as modules, for plans and checkpoint segments.
    pub fn modules(&self) -> Vec<Rc<dyn Module>> {
        self.blocks
            .iter()
            .map(|b| b.clone() as Rc<dyn Module>)
            .collect()
    }

    /// Multiply–add FLOPs of one forward pass on `rows` rows (2·m·k·n per matmul).
    pub fn forward_flops(&self, rows: usize) -> f64 {
        self.blocks
            .iter()
            .map(|b| {
                let (h, d) = (b.fc1.weight.shape()[0], b.fc1.weight.shape()[1]);
                4.0 * rows as f64 * d as f64 * h as f64
            })
            .sum()
    }
}

impl Parameters for ResidualMlp {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| prefixed(&format!("blocks.{i}"), b.named_parameters()))
            .collect()
    }
}

impl Module for ResidualMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.blocks.iter().try_fold(x.clone(), |h, b| b.forward(&h))
    }
}
