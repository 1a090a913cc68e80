//! Blockwise 8-bit AdamW (Dettmers et al., bitsandbytes ≥ 0.44). Per parameter: m in the signed
//! dynamic map and v in the unsigned one, one byte each, plus one fp32 absmax per 256-element
//! block and state; parameters under 4096 elements keep fp32 state. Each step, per element:
//! dequantize m, v with the block's old absmax; m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²; new
//! absmax = block max |m|, max v; the parameter is updated from the unquantized m, v exactly as
//! fp32 AdamW does (decay first, PyTorch's order: p ← p·(1 − lr·wd), then the Adam step);
//! m, v are requantized to the nearest code (no stochastic rounding). A non-finite gradient
//! element zeroes its m and v and leaves its parameter untouched.
//!
//! Two implementations with bit-identical results: the scalar reference below (the step table
//! of [`CodeMap::quantize`](super::quant::CodeMap::quantize)), and an AVX2+FMA block step that computes code values and codes
//! without any table lookup (`quant::arith`), because gathers cost more than the whole update.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod block;
#[cfg(feature = "cuda")]
mod device;

use super::adamw::{AdamConfig, StepConsts, adamw_elem};
use super::quant::QuantMap;
use super::{
    OptimState, Optimizer, ParamGroup, StateBuffer, decode_state, split_steps, with_grad,
    with_steps,
};
use crate::error::{Error, Result};
pub use block::BLOCK;
use block::{Block, BlockUpdate, block_step};
use rayon::prelude::*;

/// Parameters with fewer elements keep fp32 state.
pub const MIN_8BIT_SIZE: usize = 4096;

/// One parameter's optimizer state.
#[derive(Debug, Clone, PartialEq)]
pub enum Adam8bitState {
    /// Small parameters: fp32 m and v.
    Fp32 {
        /// First moment.
        m: Vec<f32>,
        /// Second moment.
        v: Vec<f32>,
    },
    /// Codes and per-block absmax for m and v.
    Blockwise {
        /// Signed-map codes of m.
        m: Vec<u8>,
        /// Unsigned-map codes of v.
        v: Vec<u8>,
        /// Per-block absmax of m.
        absmax_m: Vec<f32>,
        /// Per-block max of v.
        absmax_v: Vec<f32>,
    },
}

impl Adam8bitState {
    /// Bytes this state occupies.
    pub fn bytes(&self) -> usize {
        match self {
            Adam8bitState::Fp32 { m, v } => 4 * (m.len() + v.len()),
            Adam8bitState::Blockwise {
                m,
                v,
                absmax_m,
                absmax_v,
            } => m.len() + v.len() + 4 * (absmax_m.len() + absmax_v.len()),
        }
    }
}

/// AdamW with blockwise 8-bit state.
#[derive(Debug, Clone)]
pub struct AdamW8bit {
    groups: Vec<ParamGroup>,
    /// β and ε.
    pub config: AdamConfig,
    state: Vec<Option<Adam8bitState>>,
    /// `step()` calls so far.
    step: u64,
    /// Each parameter's own step count, for bias correction (as PyTorch and bitsandbytes).
    steps: Vec<u64>,
    qm: QuantMap,
    qv: QuantMap,
    /// Use the AVX2+FMA block step where the CPU has both (default); false runs the scalar
    /// reference, which gives bit-identical results more slowly.
    pub vectorised: bool,
    /// Per parameter: 8-bit blockwise state (else fp32).
    blockwise: Vec<bool>,
    /// The state of parameters that live on a CUDA device, kept there.
    #[cfg(feature = "cuda")]
    on_device: device::OnDevice,
}

impl AdamW8bit {
    /// 8-bit AdamW over `groups` with PyTorch's β and ε.
    pub fn new(groups: Vec<ParamGroup>) -> AdamW8bit {
        let n = groups.iter().map(|g| g.params.len()).sum();
        let blockwise = groups
            .iter()
            .flat_map(|g| g.params.iter().map(|p| p.numel() >= MIN_8BIT_SIZE))
            .collect();
        AdamW8bit {
            blockwise,
            groups,
            config: AdamConfig::default(),
            state: vec![None; n],
            step: 0,
            steps: vec![0; n],
            qm: QuantMap::signed(),
            qv: QuantMap::unsigned(),
            vectorised: true,
            #[cfg(feature = "cuda")]
            on_device: Default::default(),
        }
    }

    /// The state of parameter `i` (in group order), once it has taken a step (for a parameter
    /// on a CUDA device, as it was when uploaded: `state_dict` copies the device's back).
    pub fn state(&self, i: usize) -> Option<&Adam8bitState> {
        self.state.get(i).and_then(Option::as_ref)
    }

    /// Makes parameter `i` (in group order) keep 8-bit (`true`) or fp32 state, overriding the
    /// size rule — for a slice of a larger tensor (a ZeRO shard), whose choice is the whole
    /// tensor's. Only before the parameter's first step.
    pub fn set_blockwise(&mut self, i: usize, blockwise: bool) -> Result<()> {
        match (self.blockwise.get_mut(i), self.state.get(i)) {
            (Some(b), Some(None)) => {
                *b = blockwise;
                Ok(())
            }
            (None, _) => Err(Error::invalid(
                "AdamW8bit",
                format!(
                    "no parameter {i}: the optimizer has {}",
                    self.blockwise.len()
                ),
            )),
            _ => Err(Error::invalid(
                "AdamW8bit",
                format!("parameter {i} already has state: its kind is fixed"),
            )),
        }
    }

    fn fresh(&self, i: usize, n: usize) -> Adam8bitState {
        if !self.blockwise[i] {
            return Adam8bitState::Fp32 {
                m: vec![0.0; n],
                v: vec![0.0; n],
            };
        }
        let blocks = n.div_ceil(BLOCK);
        Adam8bitState::Blockwise {
            m: vec![self.qm.table().zero_code(); n],
            v: vec![self.qv.table().zero_code(); n],
            absmax_m: vec![0.0; blocks],
            absmax_v: vec![0.0; blocks],
        }
    }
}

/// The fp32-state step (small parameters): AdamW per element; a non-finite gradient element
/// zeroes its m and v and leaves its weight.
fn fp32_step(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: StepConsts) {
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        if g.is_finite() {
            adamw_elem(w, g, m, v, k);
        } else {
            (*m, *v) = (0.0, 0.0);
        }
    }
}

/// [`block_step`], vectorised where the CPU has AVX2 and FMA (bit-identical results).
#[inline]
fn block_step_fastest(b: Block<'_>, step: &BlockUpdate<'_>, vectorised: bool) {
    #[cfg(target_arch = "x86_64")]
    if vectorised
        && b.w.len().is_multiple_of(8)
        && let Some(maps) = avx2::arith(step)
    {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time by `arith`).
        unsafe { avx2::block_step(b, step, maps) };
        return;
    }
    block_step(b, step)
}

impl Optimizer for AdamW8bit {
    fn step(&mut self) -> Result<()> {
        self.step += 1;
        let mut idx = 0;
        for gi in 0..self.groups.len() {
            let (lr, wd) = (self.groups[gi].lr, self.groups[gi].weight_decay);
            for pi in 0..self.groups[gi].params.len() {
                let p = self.groups[gi].params[pi].clone();
                let slot = idx;
                idx += 1;
                if p.grad().is_none() {
                    continue;
                }
                self.steps[slot] += 1;
                let k = StepConsts::new(self.config, lr, wd, self.steps[slot]);
                if self.state[slot].is_none() {
                    self.state[slot] = Some(self.fresh(slot, p.numel()));
                }
                #[cfg(feature = "cuda")]
                if p.device() != crate::Device::Cpu {
                    let state = self.state[slot].as_mut().expect("initialised above");
                    self.on_device.step(slot, &p, state, k)?;
                    continue;
                }
                let vectorised = self.vectorised;
                let step = BlockUpdate {
                    m: &self.qm,
                    v: &self.qv,
                    k,
                };
                let state = self.state[slot].as_mut().expect("initialised above");
                with_grad(&p, "AdamW8bit", |w, g| match state {
                    Adam8bitState::Fp32 { m, v } => fp32_step(w, g, m, v, k),
                    Adam8bitState::Blockwise {
                        m,
                        v,
                        absmax_m,
                        absmax_v,
                    } => {
                        w.par_chunks_mut(BLOCK)
                            .zip(g.par_chunks(BLOCK))
                            .zip(m.par_chunks_mut(BLOCK))
                            .zip(v.par_chunks_mut(BLOCK))
                            .zip(absmax_m.par_iter_mut())
                            .zip(absmax_v.par_iter_mut())
                            .with_min_len(64)
                            .for_each(|(((((w, g), qm), qv), am), av)| {
                                let b = Block {
                                    w,
                                    g,
                                    qm,
                                    qv,
                                    am,
                                    av,
                                };
                                block_step_fastest(b, &step, vectorised)
                            });
                    }
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
        // Each state's buffers and its f32 step count (a device's copy has the same sizes).
        self.state.iter().flatten().map(|s| s.bytes() + 4).sum()
    }
    fn state_dict(&self) -> OptimState {
        #[cfg(feature = "cuda")]
        let state = {
            let mut state = self.state.clone();
            self.on_device.sync(&mut state);
            state
        };
        #[cfg(not(feature = "cuda"))]
        let state = &self.state;
        let buffers = state
            .iter()
            .map(|s| match s {
                None => Vec::new(),
                Some(Adam8bitState::Fp32 { m, v }) => vec![
                    ("exp_avg".into(), StateBuffer::F32(m.clone())),
                    ("exp_avg_sq".into(), StateBuffer::F32(v.clone())),
                ],
                Some(Adam8bitState::Blockwise {
                    m,
                    v,
                    absmax_m,
                    absmax_v,
                }) => vec![
                    ("state1".into(), StateBuffer::U8(m.clone())),
                    ("state2".into(), StateBuffer::U8(v.clone())),
                    ("absmax1".into(), StateBuffer::F32(absmax_m.clone())),
                    ("absmax2".into(), StateBuffer::F32(absmax_v.clone())),
                ],
            })
            .collect();
        OptimState {
            step: self.step,
            buffers: with_steps(buffers, &self.steps),
        }
    }
    fn load_state_dict(&mut self, state: OptimState) -> Result<()> {
        let (buffers, steps) = split_steps(&state.buffers, state.step);
        let decoded = decode_state("AdamW8bit", &self.params(), &buffers, |b, n, check| {
            Some(match b {
                [(_, StateBuffer::F32(m)), (_, StateBuffer::F32(v))] => check(m.len(), n)
                    .and(check(v.len(), n))
                    .map(|_| Adam8bitState::Fp32 {
                        m: m.clone(),
                        v: v.clone(),
                    }),
                [
                    (_, StateBuffer::U8(m)),
                    (_, StateBuffer::U8(v)),
                    (_, StateBuffer::F32(am)),
                    (_, StateBuffer::F32(av)),
                ] => check(m.len(), n)
                    .and(check(v.len(), n))
                    .and(check(am.len(), n.div_ceil(BLOCK)))
                    .and(check(av.len(), n.div_ceil(BLOCK)))
                    .map(|_| Adam8bitState::Blockwise {
                        m: m.clone(),
                        v: v.clone(),
                        absmax_m: am.clone(),
                        absmax_v: av.clone(),
                    }),
                _ => return None,
            })
        })?;
        self.step = state.step;
        self.steps = steps;
        self.state = decoded;
        #[cfg(feature = "cuda")]
        {
            self.on_device = Default::default();
        }
        Ok(())
    }
}
