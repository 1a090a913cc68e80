//! User-defined ops (PyTorch's `autograd.Function`): the caller computes the output and
//! supplies the backward; the tape records it like any built-in op.

use crate::autograd::{Backward, Grads};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::OpSpec;
use crate::tape::NoGradGuard;
use crate::tensor::Tensor;

/// The backward of a custom op: given dL/dy, the tensors it saved and which inputs need a
/// gradient, returns one entry per input.
pub type CustomBackward = dyn Fn(&Tensor, &[Tensor], &[bool]) -> Result<Vec<Option<Tensor>>>;

/// Records the custom op `spec` (declared once, e.g. `static OP: OpSpec = OpSpec::new("my_op",
/// "MyOp");`, with the autocast class and product flag it needs) over `inputs`. `forward` runs
/// with grad mode off and returns the output plus the tensors to save; `backward` maps dL/dy to
/// the inputs' gradients.
pub fn custom_op(
    spec: &'static OpSpec,
    inputs: &[&Tensor],
    forward: impl FnOnce(&[&Tensor]) -> Result<(Tensor, Vec<Tensor>)>,
    backward: impl Fn(&Tensor, &[Tensor], &[bool]) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Result<Tensor> {
    let saved = std::cell::RefCell::new(Vec::new());
    dispatch::apply(
        spec,
        inputs,
        |xs| {
            let (out, keep) = {
                let _ng = NoGradGuard::new();
                forward(xs)?
            };
            *saved.borrow_mut() = keep;
            Ok(Forward::from(Tensor::activation(
                out.data().clone(),
                out.shape().into(),
            )))
        },
        |xs, _| Custom {
            saved: saved.take().iter().map(save).collect(),
            backward: Box::new(backward),
            n: xs.len(),
            name: spec.name,
        },
    )
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
