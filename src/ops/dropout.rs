//! Dropout: y = x·m/(1−p) with m ~ Bernoulli(1−p) drawn from the engine generator
//! ([`crate::rng`]), so restoring the generator state replays the same mask.
//! dx = g·m/(1−p). Saves: the scaled mask m/(1−p) (x's dtype; PyTorch keeps a bool mask).

use crate::autograd::{Backward, Grads};
use crate::cpu;
use crate::dtype::{Element, Real};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::OpSpec;
use crate::rng;
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::{with_buffer, zip_buffers};
use rayon::prelude::*;
use smallvec::smallvec;

fn mask<E: Element>(_like: &[E], n: usize, p: f64) -> Vec<E> {
    let st = rng::reserve(n);
    let scale = E::from_c(<E::C as Real>::c(1.0 / (1.0 - p)));
    let mut m = vec![E::default(); n];
    m.par_chunks_mut(cpu::CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let keep = rng::uniform(st, (c * cpu::CHUNK + j) as u64) >= p;
                *v = if keep { scale } else { E::default() };
            }
        });
    m
}

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
                let (out, mk) = with_buffer!(&*t[0].data(), x => {
                    let mk = mask(x, x.len(), p);
                    (cpu::zip("dropout", x, &mk, #[inline(always)] |a, b| a * b)?.into_buffer(), mk.into_buffer())
                });
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
        let out = zip_buffers!("dropout_backward", &*g.data(), &*self.mask.data(), gv, mv => cpu::zip("dropout_backward", gv, mv, #[inline(always)] |a, b| a * b)?.into_buffer())?;
        Ok(smallvec![Some(Tensor::activation(out, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        f(&self.mask);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
