//! User-defined ops (PyTorch's `autograd.Function`): the caller computes the output and
//! supplies the backward; the tape records it like any built-in op.

use crate::autograd::{Backward, Grads};
use crate::error::{Error, Result};
use crate::ops::save;
use crate::tape::{NoGradGuard, record};
use crate::tensor::Tensor;

/// The backward of a custom op: given dL/dy, the tensors it saved and which inputs need a
/// gradient, returns one entry per input.
pub type CustomBackward = dyn Fn(&Tensor, &[Tensor], &[bool]) -> Result<Vec<Option<Tensor>>>;

/// Records a custom op `name` over `inputs`. `forward` runs with grad mode off and returns the
/// output plus the tensors to save; `backward` maps dL/dy to the inputs' gradients.
pub fn custom_op(
    name: &'static str,
    inputs: &[&Tensor],
    forward: impl FnOnce(&[&Tensor]) -> Result<(Tensor, Vec<Tensor>)>,
    backward: impl Fn(&Tensor, &[Tensor], &[bool]) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Result<Tensor> {
    let (out, saved) = {
        let _ng = NoGradGuard::new();
        forward(inputs)?
    };
    let out = Tensor::activation(out.data().clone(), out.shape().into());
    Ok(record(name, inputs, out, |_| Custom {
        saved: saved.iter().map(save).collect(),
        backward: Box::new(backward),
        n: inputs.len(),
        name,
    }))
}

struct Custom {
    saved: Vec<Tensor>,
    backward: Box<CustomBackward>,
    n: usize,
    name: &'static str,
}

impl Backward for Custom {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let grads = (self.backward)(g, &self.saved, needs)?;
        if grads.len() != self.n {
            return Err(Error::invalid(
                self.name,
                format!(
                    "backward returned {} gradients for {} inputs",
                    grads.len(),
                    self.n
                ),
            ));
        }
        Ok(grads.into_iter().collect())
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.saved.iter().for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
