//! AdamW with PyTorch's defaults (lr 1e-3, β = (0.9, 0.999), ε = 1e-8, weight decay 1e-2) and
//! update: p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
//! p ← p − (lr/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + ε). State: fp32 m and v (8 bytes per parameter).

use super::{
    OptimState, Optimizer, ParamGroup, StateBuffer, decode_state, split_steps, with_grad,
    with_steps,
};
use crate::error::Result;
use rayon::prelude::*;

/// Hyperparameters shared by AdamW and its 8-bit variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }
}

/// Decoupled-weight-decay Adam with fp32 state.
#[derive(Debug, Clone)]
pub struct AdamW {
    groups: Vec<ParamGroup>,
    /// β and ε.
    pub config: AdamConfig,
    state: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// `step()` calls so far.
    step: u64,
    /// Each parameter's own step count (bias correction uses it, as PyTorch does, so a
    /// parameter that first gets a gradient late starts at t = 1).
    steps: Vec<u64>,
}

impl AdamW {
    /// AdamW over `groups` with PyTorch's β and ε.
    pub fn new(groups: Vec<ParamGroup>) -> AdamW {
        let n = groups.iter().map(|g| g.params.len()).sum();
        AdamW {
            groups,
            config: AdamConfig::default(),
            state: vec![None; n],
            step: 0,
            steps: vec![0; n],
        }
    }
}

/// The constants of one AdamW step: β₁, β₂, ε, `c1 = lr/(1−β₁ᵗ)`, `c2 = 1/√(1−β₂ᵗ)` and
/// `decay = 1 − lr·wd`. Shared with the 8-bit optimizer (and its CUDA kernel's arguments).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepConsts {
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
    pub decay: f32,
    /// √(1−β₂ᵗ), which PyTorch divides by.
    pub bc2_sqrt: f32,
    /// 1−β₁ and 1−β₂ computed in f64, as PyTorch's Python scalars are, then rounded.
    pub one_minus_b1: f32,
    pub one_minus_b2: f32,
}

impl StepConsts {
    pub(crate) fn new(config: AdamConfig, lr: f64, weight_decay: f64, t: u64) -> StepConsts {
        let c1 = lr / (1.0 - config.betas.0.powi(t as i32));
        let c2 = 1.0 / (1.0 - config.betas.1.powi(t as i32)).sqrt();
        StepConsts {
            b1: config.betas.0 as f32,
            b2: config.betas.1 as f32,
            eps: config.eps as f32,
            c1: c1 as f32,
            c2: c2 as f32,
            decay: (1.0 - lr * weight_decay) as f32,
            bc2_sqrt: (1.0 - config.betas.1.powi(t as i32)).sqrt() as f32,
            one_minus_b1: (1.0 - config.betas.0) as f32,
            one_minus_b2: (1.0 - config.betas.1) as f32,
        }
    }
}

/// The parameter update from (unquantized) moments: decay first, then the Adam step.
#[inline]
pub(crate) fn adam_update(w: &mut f32, m: f32, v: f32, k: StepConsts) {
    *w *= k.decay;
    *w -= k.c1 * m / (v.sqrt() * k.c2 + k.eps);
}

/// PyTorch's single-tensor AdamW on one element, in its order of f32 operations:
/// `m.lerp_(g, 1−β₁)`, `v.mul_(β₂).addcmul_(g, g, 1−β₂)`, `p.mul_(1−lr·wd)`,
/// `denom = v.sqrt() / √(1−β₂ᵗ) + ε`, `p.addcdiv_(m, denom, −lr/(1−β₁ᵗ))`.
#[inline]
pub(crate) fn adamw_elem_torch(w: &mut f32, g: f32, m: &mut f32, v: &mut f32, k: StepConsts) {
    let wt = k.one_minus_b1;
    *m = if wt < 0.5 {
        *m + wt * (g - *m)
    } else {
        g - (g - *m) * (1.0 - wt)
    };
    *v = *v * k.b2 + k.one_minus_b2 * g * g;
    *w *= k.decay;
    let denom = v.sqrt() / k.bc2_sqrt + k.eps;
    *w += -k.c1 * *m / denom;
}

/// The per-element AdamW update: moments, then [`adam_update`].
#[inline]
pub(crate) fn adamw_elem(w: &mut f32, g: f32, m: &mut f32, v: &mut f32, k: StepConsts) {
    *m = k.b1 * *m + (1.0 - k.b1) * g;
    *v = k.b2 * *v + (1.0 - k.b2) * g * g;
    adam_update(w, *m, *v, k);
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        self.step += 1;
        let mut k = 0;
        for group in &self.groups {
            for p in &group.params {
                let slot = &mut self.state[k];
                let t = &mut self.steps[k];
                k += 1;
                if p.grad().is_none() {
                    continue;
                }
                *t += 1;
                let consts = StepConsts::new(self.config, group.lr, group.weight_decay, *t);
                let n = p.numel();
                let (m, v) = slot.get_or_insert_with(|| (vec![0.0; n], vec![0.0; n]));
                with_grad(p, "AdamW", |w, g| {
                    const CH: usize = 1 << 14;
                    w.par_chunks_mut(CH)
                        .zip(g.par_chunks(CH))
                        .zip(m.par_chunks_mut(CH))
                        .zip(v.par_chunks_mut(CH))
                        .for_each(|(((w, g), m), v)| {
                            for (((w, &g), m), v) in
                                w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                            {
                                adamw_elem_torch(w, g, m, v, consts);
                            }
                        });
                })?;
            }
        }
        Ok(())
    }
    fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    fn groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }
    fn state_bytes(&self) -> usize {
        // exp_avg, exp_avg_sq and the f32 step count.
        self.state
            .iter()
            .flatten()
            .map(|(m, v)| 4 * (m.len() + v.len() + 1))
            .sum()
    }
    fn state_dict(&self) -> OptimState {
        let buffers = self
            .state
            .iter()
            .map(|s| match s {
                Some((m, v)) => vec![
                    ("exp_avg".to_string(), StateBuffer::F32(m.clone())),
                    ("exp_avg_sq".to_string(), StateBuffer::F32(v.clone())),
                ],
                None => Vec::new(),
            })
            .collect();
        OptimState {
            step: self.step,
            buffers: with_steps(buffers, &self.steps),
        }
    }
    fn load_state_dict(&mut self, state: OptimState) -> Result<()> {
        let (buffers, steps) = split_steps(&state.buffers, state.step);
        let decoded = decode_state("AdamW", &self.params(), &buffers, |b, n, check| {
            let [(_, StateBuffer::F32(m)), (_, StateBuffer::F32(v))] = b else {
                return None;
            };
            Some(
                check(m.len(), n)
                    .and(check(v.len(), n))
                    .map(|_| (m.clone(), v.clone())),
            )
        })?;
        self.step = state.step;
        self.steps = steps;
        self.state = decoded;
        Ok(())
    }
}
