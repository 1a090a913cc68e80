//! LoRA: a frozen base linear layer plus a trainable low-rank update,
//! y = x·Wᵀ + b + (α/r)·(dropout(x)·Aᵀ)·Bᵀ with A `[r, in]` and B `[out, r]` (B starts at zero,
//! so the adapted layer starts equal to the base). The dropout is PEFT's `lora_dropout`: off by
//! default, active in training mode only, its masks drawn from the engine generator (so a
//! checkpoint segment's rerun draws the same ones).

use super::{Dropout, ForwardHooks, Linear, Module, Parameters, uniform_param};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// A linear layer with frozen base weights and trainable LoRA adapters.
#[derive(Debug)]
pub struct LoraLinear {
    /// The frozen base layer.
    pub base: Linear,
    /// Down-projection `[r, in]`, trainable.
    pub a: Tensor,
    /// Up-projection `[out, r]`, trainable, initialised to zero.
    pub b: Tensor,
    /// α/r.
    pub scale: f64,
    /// PEFT's `lora_dropout` on the adapter's input (p = 0: none).
    pub dropout: Dropout,
    /// Hooks run on the output.
    pub hooks: ForwardHooks,
}

impl LoraLinear {
    /// Wraps `base` (its parameters are frozen) with rank-`r` adapters scaled by α/r.
    pub fn new(base: Linear, r: usize, alpha: f64) -> Result<LoraLinear> {
        for p in base.parameters() {
            p.requires_grad_(false)?;
        }
        let (out, inp) = (base.weight.shape()[0], base.weight.shape()[1]);
        let a = uniform_param(&[r, inp], 1.0 / (inp.max(1) as f64).sqrt())?;
        let b = Tensor::zeros(&[out, r], DType::F32)?.requires_grad_(true)?;
        Ok(LoraLinear {
            base,
            a,
            b,
            scale: alpha / r.max(1) as f64,
            dropout: Dropout::new(0.0),
            hooks: ForwardHooks::default(),
        })
    }
}

impl Parameters for LoraLinear {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = super::prefixed("base", self.base.named_parameters());
        p.push(("lora_A".to_string(), self.a.clone()));
        p.push(("lora_B".to_string(), self.b.clone()));
        p
    }
}

impl Module for LoraLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dropped;
        let input = match self.dropout.p > 0.0 {
            true => {
                dropped = self.dropout.forward(x)?;
                &dropped
            }
            false => x,
        };
        let low = input
            .linear(&self.a, None)?
            .linear(&self.b, None)?
            .mul_scalar(self.scale)?;
        let y = self.base.forward(x)?.add(&low)?;
        self.hooks.run(&y)?;
        Ok(y)
    }
}

/// A projection that is either a plain trainable linear layer or, with a LoRA rank, a frozen
/// base layer with rank-r adapters (α = 2r) — how the models switch LoRA on.
#[derive(Debug)]
pub enum Projection {
    /// Trainable `Linear`.
    Plain(Linear),
    /// Frozen base with adapters.
    Lora(LoraLinear),
}

impl Projection {
    /// `Linear(d_in, d_out)` with a bias, wrapped in LoRA when `lora_rank > 0`.
    pub fn new(d_in: usize, d_out: usize, lora_rank: usize) -> Result<Projection> {
        let base = Linear::new(d_in, d_out, true)?;
        Ok(if lora_rank == 0 {
            Projection::Plain(base)
        } else {
            Projection::Lora(LoraLinear::new(base, lora_rank, 2.0 * lora_rank as f64)?)
        })
    }

    /// The layer as a module.
    pub fn module(&self) -> &dyn Module {
        match self {
            Projection::Plain(l) => l,
            Projection::Lora(l) => l,
        }
    }

    /// Sets a LoRA projection's adapter dropout (a plain one has none).
    pub fn set_lora_dropout(&mut self, p: f64) {
        if let Projection::Lora(l) = self {
            l.dropout.p = p;
        }
    }

    /// Training (dropout on) or eval mode.
    pub fn train(&self, on: bool) {
        if let Projection::Lora(l) = self {
            l.dropout.train(on);
        }
    }
}
