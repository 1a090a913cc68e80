//! SGD with PyTorch's rule: d = g + wd·p; buf = d (first step) or μ·buf + (1−dampening)·d;
//! d = d + μ·buf (Nesterov) or buf; p ← p − lr·d.

use super::{OptimState, Optimizer, ParamGroup, StateBuffer, decode_state, with_grad};
use crate::error::{Error, Result};

/// Stochastic gradient descent.
#[derive(Debug, Clone)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    /// μ.
    pub momentum: f64,
    /// Dampening of the momentum update.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    buffers: Vec<Option<Vec<f32>>>,
    steps: u64,
}

impl Sgd {
    /// SGD over `groups` (PyTorch's defaults: no momentum, no dampening).
    pub fn new(groups: Vec<ParamGroup>, momentum: f64, nesterov: bool) -> Result<Sgd> {
        if nesterov && momentum <= 0.0 {
            return Err(Error::invalid(
                "Sgd",
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(Sgd {
            groups,
            momentum,
            dampening: 0.0,
            nesterov,
            buffers: vec![None; n],
            steps: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let (mu, damp, nesterov) = (self.momentum as f32, self.dampening as f32, self.nesterov);
        let mut k = 0;
        for group in &self.groups {
            let (lr, wd) = (group.lr as f32, group.weight_decay as f32);
            for p in &group.params {
                let slot = &mut self.buffers[k];
                k += 1;
                with_grad(p, "Sgd", |w, g| {
                    let first = slot.is_none();
                    let buf = slot.get_or_insert_with(|| {
                        if mu != 0.0 {
                            vec![0.0; w.len()]
                        } else {
                            Vec::new()
                        }
                    });
                    for (i, (w, &g)) in w.iter_mut().zip(g).enumerate() {
                        let mut d = if wd != 0.0 { g + wd * *w } else { g };
                        if mu != 0.0 {
                            buf[i] = if first {
                                d
                            } else {
                                mu * buf[i] + (1.0 - damp) * d
                            };
                            d = if nesterov { d + mu * buf[i] } else { buf[i] };
                        }
                        *w -= lr * d;
                    }
                    if mu == 0.0 {
                        *slot = None;
                    }
                })?;
            }
        }
        self.steps += 1;
        Ok(())
    }
    fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    fn groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }
    fn state_bytes(&self) -> usize {
        self.buffers.iter().flatten().map(|v| 4 * v.len()).sum()
    }
    fn state_dict(&self) -> OptimState {
        OptimState {
            step: self.steps,
            buffers: self
                .buffers
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|v| ("momentum_buffer".to_string(), StateBuffer::F32(v.clone())))
                        .collect()
                })
                .collect(),
        }
    }
    fn load_state_dict(&mut self, state: OptimState) -> Result<()> {
        let decoded = decode_state("Sgd", &self.params(), &state.buffers, |b, n, check| {
            let [(_, StateBuffer::F32(v))] = b else {
                return None;
            };
            Some(check(v.len(), n).map(|_| v.clone()))
        })?;
        self.steps = state.step;
        self.buffers = decoded;
        Ok(())
    }
}
