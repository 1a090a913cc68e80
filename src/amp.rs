//! Dynamic loss scaling (PyTorch's `GradScaler`): scale the loss so small fp16 gradients do
//! not underflow, unscale before the optimizer step, skip steps whose gradients overflowed,
//! and adapt the scale. Defaults and rules are PyTorch's: init 65536, growth ×2 after 2000
//! clean steps, backoff ×0.5 on inf/NaN.

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::storage::Buffer;
use crate::tensor::Tensor;

/// PyTorch's error for unscaling fp16 gradients.
pub const FP16_GRADS_MSG: &str = "Attempting to unscale FP16 gradients.";
/// PyTorch's error for a second `unscale_` in one step.
pub const UNSCALE_TWICE_MSG: &str =
    "unscale_() has already been called on this optimizer since the last update().";

/// The scaler's state, for resuming exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerState {
    /// Current scale.
    pub scale: f32,
    /// Consecutive clean steps.
    pub growth_tracker: u32,
}

/// Dynamic loss scaler.
#[derive(Debug, Clone)]
pub struct GradScaler {
    scale: f32,
    /// Multiplier after `growth_interval` clean steps.
    pub growth_factor: f32,
    /// Multiplier after a step with inf/NaN gradients.
    pub backoff_factor: f32,
    /// Clean steps before growing.
    pub growth_interval: u32,
    tracker: u32,
    /// `Some(found_inf)` once `unscale_` ran in this step.
    unscaled: Option<bool>,
    found_inf_last: bool,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            tracker: 0,
            unscaled: None,
            found_inf_last: false,
        }
    }
}

impl GradScaler {
    /// A scaler with PyTorch's defaults.
    pub fn new() -> GradScaler {
        GradScaler::default()
    }

    /// The current scale.
    pub fn get_scale(&self) -> f32 {
        self.scale
    }

    /// loss × scale (a tape op, so backward produces scaled gradients).
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        loss.mul_scalar(self.scale as f64)
    }

    /// Multiplies every gradient of `opt`'s parameters by 1/scale in place and records whether
    /// any incoming (still scaled) value is inf or NaN, as PyTorch's
    /// `_amp_foreach_non_finite_check_and_unscale_` does: a finite gradient that overflows only
    /// once unscaled is not "found inf". Unscaling happens either way. At most once per step.
    pub fn unscale_(&mut self, opt: &dyn Optimizer) -> Result<()> {
        self.unscale_agreeing_(opt, &mut |found| Ok(found))
    }

    /// [`Self::unscale_`] where `opt` holds a shard of the gradients (ZeRO): `agree` turns this
    /// shard's finding into every shard's (e.g. an all-reduce of the flag), so all skip or all
    /// step, as PyTorch's `ShardedGradScaler` does.
    pub fn unscale_agreeing_(
        &mut self,
        opt: &dyn Optimizer,
        agree: &mut dyn FnMut(bool) -> Result<bool>,
    ) -> Result<()> {
        if self.unscaled.is_some() {
            return Err(Error::invalid("GradScaler", UNSCALE_TWICE_MSG));
        }
        let inv = ((1.0f64 / self.scale as f64) as f32,);
        let mut found_inf = false;
        let mut on_device = Vec::new();
        for p in opt.params() {
            let Some(g) = p.grad() else { continue };
            if g.device() != crate::Device::Cpu {
                on_device.push(g);
                continue;
            }
            let data = match &*g.host("GradScaler")? {
                Buffer::F32(v) => {
                    found_inf |= v.iter().any(|x| !x.is_finite());
                    Buffer::F32(v.iter().map(|x| x * inv.0).collect())
                }
                // PyTorch unscales bf16 gradients (only fp16 ones are refused).
                Buffer::BF16(v) => {
                    found_inf |= v.iter().any(|x| !x.is_finite());
                    Buffer::BF16(
                        v.iter()
                            .map(|x| half::bf16::from_f32(x.to_f32() * inv.0))
                            .collect(),
                    )
                }
                Buffer::F16(_) => return Err(Error::invalid("GradScaler", FP16_GRADS_MSG)),
                Buffer::F64(_) => {
                    return Err(Error::invalid("GradScaler", "expected f32 gradients"));
                }
            };
            p.set_grad(Some(Tensor::from_buffer(data, g.shape())?));
        }
        if !on_device.is_empty() {
            found_inf |= self.unscale_on_device(&on_device)?;
        }
        self.unscaled = Some(agree(found_inf)?);
        Ok(())
    }

    /// Device gradients unscaled in place by the loss-scale kernel (feature `cuda`).
    #[cfg(feature = "cuda")]
    fn unscale_on_device(&self, grads: &[Tensor]) -> Result<bool> {
        if grads.iter().any(|g| g.dtype() == crate::DType::F16) {
            return Err(Error::invalid("GradScaler", FP16_GRADS_MSG));
        }
        crate::cuda::loss_scale::unscale_tensors(grads, self.scale)
    }

    /// Without the `cuda` feature no tensor lives on a device.
    #[cfg(not(feature = "cuda"))]
    fn unscale_on_device(&self, grads: &[Tensor]) -> Result<bool> {
        Err(Error::Unsupported {
            op: "GradScaler",
            device: grads[0].device().to_string(),
        })
    }

    /// Unscales if not yet done, then runs `opt.step()` unless a gradient was inf/NaN (then
    /// parameters and optimizer state stay untouched). Returns whether the step ran.
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<bool> {
        if self.unscaled.is_none() {
            self.unscale_(opt)?;
        }
        let found_inf = self.unscaled.unwrap_or(false);
        self.found_inf_last = found_inf;
        if !found_inf {
            opt.step()?;
        }
        Ok(!found_inf)
    }

    /// Adapts the scale: ×backoff and reset after an overflow; ×growth after
    /// `growth_interval` clean steps (only if the result stays finite).
    pub fn update(&mut self) {
        let found_inf = self.unscaled.take().unwrap_or(self.found_inf_last);
        if found_inf {
            self.scale *= self.backoff_factor;
            self.tracker = 0;
        } else {
            self.tracker += 1;
            if self.tracker == self.growth_interval {
                let grown = self.scale * self.growth_factor;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.tracker = 0;
            }
        }
        self.found_inf_last = false;
    }

    /// The state needed to resume.
    pub fn state_dict(&self) -> ScalerState {
        ScalerState {
            scale: self.scale,
            growth_tracker: self.tracker,
        }
    }

    /// Restores a saved state.
    pub fn load_state_dict(&mut self, s: ScalerState) {
        self.scale = s.scale;
        self.tracker = s.growth_tracker;
    }
}
