//! GELU, exact (erf) and tanh-approximated, each one fused pass forward and one backward.

use crate::dtype::Real;
use crate::error::Result;
use crate::ops::spec::OpSpec;
use crate::ops::unary::{Saves, Unary, apply};
use crate::tensor::Tensor;

/// Which GELU formula to use (PyTorch's `approximate` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluApprox {
    /// y = x·Φ(x) = ½x(1 + erf(x/√2)) (PyTorch's default `'none'`).
    None,
    /// y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))) (`'tanh'`).
    Tanh,
}

/// Exact GELU. y' = Φ(x) + x·φ(x). Saves: input.
#[derive(Debug, Clone, Copy)]
struct GeluErf;

impl Unary for GeluErf {
    const SPEC: &'static OpSpec = &OpSpec::new("gelu", "Gelu");
    const SAVES: Saves = Saves::Input;
    #[inline(always)]
    fn f<T: Real>(self, x: T) -> T {
        T::c(0.5) * x * (T::one() + (x * T::c(std::f64::consts::FRAC_1_SQRT_2)).erf())
    }
    #[inline(always)]
    fn df<T: Real>(self, x: T, _y: T) -> T {
        let cdf = T::c(0.5) * (T::one() + (x * T::c(std::f64::consts::FRAC_1_SQRT_2)).erf());
        let pdf = (-T::c(0.5) * x * x).exp_k() * T::c(0.398_942_280_401_432_7);
        cdf + x * pdf
    }
}

/// Tanh GELU. With u = k(x + 0.044715x³), t = tanh u:
/// y' = ½(1 + t) + ½x(1 − t²)·k(1 + 3·0.044715x²). Saves: input.
/// Both use ½(1 + t) = σ(2u) and 1 − t² = 4e/(1 + e)² with e = e^(−2|u|), which keep their
/// precision where t is within an ulp of ±1 (|x| ≳ 4.8 in f32).
#[derive(Debug, Clone, Copy)]
struct GeluTanh;

const K: f64 = 0.797_884_560_802_865_4; // √(2/π)
const C: f64 = 0.044_715;

impl Unary for GeluTanh {
    const SPEC: &'static OpSpec = &OpSpec::new("gelu_tanh", "Gelu");
    const SAVES: Saves = Saves::Input;
    #[inline(always)]
    fn f<T: Real>(self, x: T) -> T {
        // x·σ(2u); for u ≥ 0 as x − x·σ(−2u), so the result is rounded once, near x.
        let u = T::c(K) * (x + T::c(C) * x * x * x);
        let e = (T::c(-2.0) * u.abs()).exp_k();
        let small = e * (T::one() + e).recip();
        if u >= T::zero() {
            x - x * small
        } else {
            x * small
        }
    }
    #[inline(always)]
    fn df<T: Real>(self, x: T, _y: T) -> T {
        let u = T::c(K) * (x + T::c(C) * x * x * x);
        let e = (T::c(-2.0) * u.abs()).exp_k();
        let inv = (T::one() + e).recip();
        let half_1_plus_t = if u >= T::zero() { inv } else { e * inv };
        let sech2 = T::c(4.0) * e * inv * inv;
        let du = T::c(K) * (T::one() + T::c(3.0 * C) * x * x);
        half_1_plus_t + T::c(0.5) * x * sech2 * du
    }
}

impl Tensor {
    /// Exact GELU (PyTorch's default).
    pub fn gelu(&self) -> Result<Tensor> {
        apply(self, GeluErf)
    }

    /// GELU with the formula chosen by `approx`.
    pub fn gelu_with(&self, approx: GeluApprox) -> Result<Tensor> {
        match approx {
            GeluApprox::None => apply(self, GeluErf),
            GeluApprox::Tanh => apply(self, GeluTanh),
        }
    }
}
