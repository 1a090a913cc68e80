//! Dropout: y = x·m/(1−p) with m ~ Bernoulli(1−p) drawn from the engine generator
//! ([`crate::rng`]), so restoring the generator state replays the same mask.
//! dx = g·m/(1−p). Saves: the scaled mask m/(1−p) (x's dtype; PyTorch keeps a bool mask).

use crate::autograd::{Backward, Grads};
use crate::backend::{BackendStorage, BinaryOp};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::OpSpec;
use crate::tensor::Tensor;
use smallvec::smallvec;

impl Tensor {
    /// Zeroes each element with probability `p` and scales the rest by 1/(1−p) when
    /// `training`; the identity otherwise.
    pub fn dropout(&self, p: f64, training: bool) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("dropout probability has to be between 0 and 1, but got {p}"),
            ));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        if p == 1.0 {
            return self.mul_scalar(0.0);
        }
        let m = std::cell::RefCell::new(None);
        dispatch::apply(
            &DROPOUT,
            &[self],
            |t| {
                let x = t[0].data();
                let mk = x.dropout_mask(p)?;
                let s = t[0].shape();
                let out = x.binary(&mk, BinaryOp::Mul, (s, s, s), "dropout")?;
                *m.borrow_mut() = Some(Tensor::activation(mk, t[0].shape().into()));
                Ok(Forward::from(Tensor::activation(out, t[0].shape().into())))
            },
            |_, _| DropoutBackward {
                mask: save(&m.take().expect("the forward drew it")),
            },
        )
    }
}

static DROPOUT: OpSpec = OpSpec::new("dropout", "NativeDropout");

struct DropoutBackward {
    mask: Tensor,
}

impl Backward for DropoutBackward {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let s = g.shape();
        let out = g.data().binary(
            &self.mask.data(),
            BinaryOp::Mul,
            (s, s, s),
            "dropout_backward",
        )?;
        Ok(smallvec![Some(Tensor::activation(out, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.mask);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
