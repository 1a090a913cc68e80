//! SiLU (swish), the activation of Llama's, Qwen2's and GLM's gated MLPs: y = x·σ(x) = x/(1 + e⁻ˣ) with
//! σ(x) = 1/(1 + e⁻ˣ); y' = σ(x)·(1 + x·(1 − σ(x))). One fused pass each way, through the
//! kernels' vectorised exp. Saves: input.

use crate::dtype::Real;
use crate::error::Result;
use crate::ops::spec::OpSpec;
use crate::ops::unary::{Saves, Unary, apply};
use crate::tensor::Tensor;

#[derive(Debug, Clone, Copy)]
struct Silu;

impl Unary for Silu {
    const SPEC: &'static OpSpec = &OpSpec::new("silu", "Silu");
    const SAVES: Saves = Saves::Input;
    #[inline(always)]
    fn f<T: Real>(self, x: T) -> T {
        // PyTorch's kernel: one division, x / (1 + e⁻ˣ).
        x / (T::one() + (-x).exp_k())
    }
    #[inline(always)]
    fn df<T: Real>(self, x: T, _y: T) -> T {
        let s = (T::one() + (-x).exp_k()).recip();
        s * (T::one() + x * (T::one() - s))
    }
}

impl Tensor {
    /// Elementwise x·σ(x) (PyTorch's `F.silu`).
    pub fn silu(&self) -> Result<Tensor> {
        apply(self, Silu)
    }
}
