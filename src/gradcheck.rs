//! Finite-difference gradient checking: compares backward's gradients with central
//! differences (f(x+ε) − f(x−ε))/2ε on L = Σ f(x)⊙w for fixed pseudo-random weights w.
//! Use f64 inputs; the engine generator is restored before every evaluation, so ops that
//! draw random numbers (dropout) see the same draws each time.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng::{self, GeneratorState};
use crate::tape::NoGradGuard;
use crate::tensor::Tensor;

/// Step and tolerances: an element passes when |analytic − numeric| ≤ atol + rtol·|numeric|.
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The worst disagreement found.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Which input.
    pub input: usize,
    /// Which element of it (row-major).
    pub element: usize,
    /// The gradient backward computed.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
}

/// What a gradient check found.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// True when every element was within tolerance.
    pub passed: bool,
    /// Largest |analytic − numeric| over all elements.
    pub max_abs_err: f64,
    /// The worst failing element, if any.
    pub worst: Option<Mismatch>,
}

fn weights(n: usize) -> Vec<f64> {
    let st = GeneratorState {
        seed: 0x6AD_C4EC,
        offset: 0,
    };
    (0..n as u64).map(|i| 0.5 + rng::uniform(st, i)).collect()
}

fn objective(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    xs: &[Tensor],
    state: GeneratorState,
) -> Result<Tensor> {
    rng::set_state(state);
    let y = f(xs)?;
    let w = Tensor::from_vec(weights(y.numel()), y.shape())?.to_dtype(y.dtype())?;
    y.mul(&w)?.sum()
}

/// Checks `f`'s gradients with respect to every input at the given point.
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradcheckOptions,
) -> Result<GradcheckReport> {
    let state = rng::get_state();
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.deep_clone().requires_grad_(true))
        .collect::<Result<_>>()?;
    let loss = objective(&f, &leaves, state)?;
    loss.backward()?;
    let mut report = GradcheckReport {
        passed: true,
        max_abs_err: 0.0,
        worst: None,
    };
    let _ng = NoGradGuard::new();
    for (i, leaf) in leaves.iter().enumerate() {
        if leaf.dtype() != DType::F64 {
            return Err(Error::invalid(
                "gradcheck",
                "inputs must be f64 for a meaningful check",
            ));
        }
        let analytic = leaf
            .grad()
            .map_or_else(|| vec![0.0; leaf.numel()], |g| g.to_vec_f64());
        let base = leaf.to_vec_f64();
        for j in 0..base.len() {
            let at = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs: Vec<Tensor> = leaves.iter().map(Tensor::detach).collect();
                xs[i] = Tensor::from_vec(v, leaf.shape())?;
                objective(&f, &xs, state)?.item()
            };
            let numeric = (at(opts.eps)? - at(-opts.eps)?) / (2.0 * opts.eps);
            let err = (analytic[j] - numeric).abs();
            report.max_abs_err = report.max_abs_err.max(err);
            let within = err <= opts.atol + opts.rtol * numeric.abs(); // false for NaN too
            if !within {
                let worse = report
                    .worst
                    .as_ref()
                    .is_none_or(|w| err > (w.analytic - w.numeric).abs());
                report.passed = false;
                if worse {
                    report.worst = Some(Mismatch {
                        input: i,
                        element: j,
                        analytic: analytic[j],
                        numeric,
                    });
                }
            }
        }
    }
    rng::set_state(state);
    Ok(report)
}
