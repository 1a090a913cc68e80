//! 8-bit AdamW on parameters that live on a CUDA device (feature `cuda`): blockwise state is
//! uploaded once and stepped there by `adam8bit.cu` (the CPU's maps, order and rounding: the
//! same bits), and copied back only for `state_dict`; parameters with fp32 state (under 4096
//! elements) are stepped on the host and written back.

use super::{Adam8bitState, fp32_step};
use crate::Tensor;
use crate::backend::{Data, Side};
use crate::cuda::CudaBuffer;
use crate::cuda::adam8bit::DeviceMoments;
use crate::error::{Error, Result};
use crate::optim::adamw::StepConsts;
use std::cell::RefCell;
use std::rc::Rc;

/// Each parameter's device moments, once it has stepped on a device (clones share them).
#[derive(Default, Clone)]
pub(super) struct OnDevice(Vec<Option<Rc<RefCell<DeviceMoments>>>>);

impl std::fmt::Debug for OnDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.iter().flatten().count();
        write!(f, "OnDevice({n} parameters)")
    }
}

impl OnDevice {
    /// One step of parameter `slot` (`p`, on a CUDA device) with its state.
    pub(super) fn step(
        &mut self,
        slot: usize,
        p: &Tensor,
        state: &mut Adam8bitState,
        k: StepConsts,
    ) -> Result<()> {
        let op = "AdamW8bit";
        if p.dtype() != crate::DType::F32 {
            return Err(Error::invalid(
                op,
                format!("expected f32 parameters, got {:?}", p.dtype()),
            ));
        }
        match state {
            Adam8bitState::Blockwise {
                m,
                v,
                absmax_m,
                absmax_v,
            } => {
                if self.0.len() <= slot {
                    self.0.resize(slot + 1, None);
                }
                if self.0[slot].is_none() {
                    let crate::Device::Cuda(gpu) = p.device() else {
                        return Err(Error::invalid(op, "the parameter is not on a CUDA device"));
                    };
                    let up = DeviceMoments::upload(&gpu, (m, v, absmax_m, absmax_v))?;
                    self.0[slot] = Some(Rc::new(RefCell::new(up)));
                }
                let moments = self.0[slot].as_ref().expect("uploaded above");
                moments
                    .borrow_mut()
                    .step(p, [k.b1, k.b2, k.eps, k.c1, k.c2, k.decay])
            }
            Adam8bitState::Fp32 { m, v } => {
                let Some(grad) = p.grad() else { return Ok(()) };
                let mut w = p.to_vec::<f32>()?;
                fp32_step(&mut w, &grad.to_vec::<f32>()?, m, v, k);
                let mut data = p.storage().try_borrow_mut().ok_or_else(|| {
                    Error::invalid(op, "the parameter's data is borrowed; drop the guard first")
                })?;
                let buf: &mut CudaBuffer = Side::side_mut(&mut *data as &mut Data, op)?;
                buf.write_f32(&w, op)?;
                drop(data);
                p.storage().bump_version();
                Ok(())
            }
        }
    }

    /// `states` with each device parameter's moments copied back from the device; a copy
    /// that fails leaves that state as it was uploaded and says so in [`crate::warnings`].
    pub(super) fn sync(&self, states: &mut [Option<Adam8bitState>]) {
        for (slot, moments) in self.0.iter().enumerate() {
            let (
                Some(moments),
                Some(Some(Adam8bitState::Blockwise {
                    m,
                    v,
                    absmax_m,
                    absmax_v,
                })),
            ) = (moments, states.get_mut(slot))
            else {
                continue;
            };
            match moments.borrow().download() {
                Ok(now) => (*m, *v, *absmax_m, *absmax_v) = now,
                Err(e) => crate::warnings::warn(format!(
                    "AdamW8bit: parameter {slot}'s device state could not be copied back ({e}); \
                     the state_dict holds it as it was uploaded"
                )),
            }
        }
    }
}
