//! Moving a tensor between devices: y = x on `device`, bits unchanged; the gradient moves back
//! to x's device. Saves: x's device (not a tensor).

use crate::autograd::{Backward, Grads};
use crate::backend::Device;
use crate::error::Result;
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::OpSpec;
use crate::tensor::Tensor;
use smallvec::smallvec;

static TO_DEVICE: OpSpec = OpSpec::new("to_device", "ToCopy");

impl Tensor {
    /// A copy on `device` (this tensor when it is already there), recorded like PyTorch's
    /// `.to(device)`: the gradient flows back to this tensor's device. A CUDA device takes f16
    /// and f32 elements.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        let from = self.device();
        if &from == device {
            return Ok(self.clone());
        }
        dispatch::apply(
            &TO_DEVICE,
            &[self],
            |t| {
                let out = t[0].data().to_device(device)?;
                Ok(Forward::from(Tensor::activation(out, t[0].shape().into())))
            },
            |_, _| ToDeviceBackward { from },
        )
    }
}

struct ToDeviceBackward {
    from: Device,
}

impl Backward for ToDeviceBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let back = g.data().to_device(&self.from)?;
        Ok(smallvec![Some(Tensor::activation(back, g.shape().into()))])
    }
    fn visit_saved(&self, _f: &mut dyn FnMut(&Tensor)) {}
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
