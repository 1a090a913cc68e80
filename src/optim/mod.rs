//! Optimizers with PyTorch's update rules and defaults: SGD (momentum, Nesterov, weight
//! decay), AdamW (fp32 state), blockwise 8-bit AdamW (bitsandbytes' algorithm), and
//! `clip_grad_norm_`. Parameters are updated in place, outside the tape.

mod adam8bit;
mod adamw;
mod clip;
pub mod quant;
mod sgd;

pub use adam8bit::{Adam8bitState, AdamW8bit, BLOCK, MIN_8BIT_SIZE};
pub use adamw::AdamW;
pub use clip::{clip_grad_norm_, clip_grad_norm_agreeing_};
pub use sgd::Sgd;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Parameters sharing a learning rate and weight decay (PyTorch's param groups).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The parameters.
    pub params: Vec<Tensor>,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (L2 for SGD, decoupled for AdamW).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with the given rates.
    pub fn new(params: Vec<Tensor>, lr: f64, weight_decay: f64) -> ParamGroup {
        ParamGroup {
            params,
            lr,
            weight_decay,
        }
    }
}

/// A saved optimizer state: per-parameter buffers and counters, in parameter order.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimState {
    /// `step()` calls so far (each parameter also keeps its own count, as PyTorch does, in a
    /// `step` buffer).
    pub step: u64,
    /// Named buffers per parameter (e.g. `exp_avg`), as raw bytes or f32 values.
    pub buffers: Vec<Vec<(String, StateBuffer)>>,
}

/// One state buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum StateBuffer {
    /// fp32 values.
    F32(Vec<f32>),
    /// Quantization codes.
    U8(Vec<u8>),
}

impl StateBuffer {
    /// Bytes of its elements.
    pub fn bytes(&self) -> usize {
        match self {
            StateBuffer::F32(v) => 4 * v.len(),
            StateBuffer::U8(v) => v.len(),
        }
    }
}

/// What every optimizer offers.
pub trait Optimizer {
    /// Applies one update from the parameters' `.grad` (parameters without one are skipped).
    fn step(&mut self) -> Result<()>;
    /// The parameter groups (learning rates can be changed through them).
    fn groups(&self) -> &[ParamGroup];
    /// Mutable groups, for schedulers.
    fn groups_mut(&mut self) -> &mut [ParamGroup];
    /// The state needed to resume exactly.
    fn state_dict(&self) -> OptimState;
    /// Bytes of state held now, as [`Optimizer::state_dict`] holds them (each stateful
    /// parameter's `step` count included); optimizers answer without copying their state.
    fn state_bytes(&self) -> usize {
        self.state_dict()
            .buffers
            .iter()
            .flatten()
            .map(|(_, b)| b.bytes())
            .sum()
    }
    /// Restores a state saved by [`Optimizer::state_dict`].
    fn load_state_dict(&mut self, state: OptimState) -> Result<()>;
    /// Clears every parameter's gradient (PyTorch's `set_to_none=True`).
    fn zero_grad(&self) {
        for g in self.groups() {
            g.params.iter().for_each(Tensor::zero_grad);
        }
    }
    /// Every parameter, in group order.
    fn params(&self) -> Vec<Tensor> {
        self.groups()
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }
}

/// Runs `f(weights, gradient)` on a parameter with an f32 gradient (optimizers keep fp32
/// master weights), without copying the gradient; returns false when it has no gradient.
pub(crate) fn with_grad(
    p: &Tensor,
    op: &'static str,
    f: impl FnOnce(&mut [f32], &[f32]),
) -> Result<bool> {
    let Some(g) = p.grad() else { return Ok(false) };
    let g = if g.same_storage(p) { g.deep_clone() } else { g };
    let data = g.host(op)?;
    let gs = data.typed::<f32>().ok_or_else(|| {
        Error::invalid(
            op,
            format!(
                "expected f32 gradients (fp32 master weights), got {:?}",
                data.dtype()
            ),
        )
    })?;
    if gs.len() != p.numel() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: p.shape().to_vec(),
            rhs: g.shape().to_vec(),
        });
    }
    with_f32_mut(p, op, |w| f(w, gs))?;
    Ok(true)
}

/// Runs `f` on the parameter's f32 values in place.
pub(crate) fn with_f32_mut(p: &Tensor, op: &'static str, f: impl FnOnce(&mut [f32])) -> Result<()> {
    if p.dtype() != crate::DType::F32 {
        return Err(Error::invalid(
            op,
            format!("expected f32 parameters, got {:?}", p.dtype()),
        ));
    }
    p.update_data::<f32>(f)
}

/// Appends each stateful parameter's own step count (PyTorch's `state[p]["step"]`, an f32
/// as in PyTorch) to its buffers.
pub(crate) fn with_steps(
    mut buffers: Vec<Vec<(String, StateBuffer)>>,
    steps: &[u64],
) -> Vec<Vec<(String, StateBuffer)>> {
    for (b, &t) in buffers.iter_mut().zip(steps) {
        if !b.is_empty() {
            b.push(("step".into(), StateBuffer::F32(vec![t as f32])));
        }
    }
    buffers
}

/// Takes the per-parameter `step` buffers back off; a state saved without them (one global
/// count) gives every stateful parameter `global`.
pub(crate) fn split_steps(
    buffers: &[Vec<(String, StateBuffer)>],
    global: u64,
) -> (Vec<Vec<(String, StateBuffer)>>, Vec<u64>) {
    buffers
        .iter()
        .map(|b| match b.split_last() {
            Some(((name, StateBuffer::F32(t)), rest)) if name == "step" && t.len() == 1 => {
                (rest.to_vec(), t[0] as u64)
            }
            _ if b.is_empty() => (Vec::new(), 0),
            _ => (b.clone(), global),
        })
        .unzip()
}

/// One parameter's saved buffers, as [`Optimizer::state_dict`] lists them.
pub(crate) type SavedBuffers = [(String, StateBuffer)];

/// Checks a buffer's length against what its parameter needs (`check(got, want)`).
pub(crate) type LenCheck<'a> = &'a dyn Fn(usize, usize) -> Result<()>;

/// Decodes a saved state, shared by every optimizer's `load_state_dict`: one entry per
/// parameter (else an error), `[]` for a parameter with no state yet, otherwise
/// `decode(buffers, numel, check)`, which returns `None` for a layout it does not know. A
/// buffer whose length differs from what its parameter needs is an error (a corrupt or
/// mismatched save), never a silent truncation.
pub(crate) fn decode_state<T>(
    op: &'static str,
    params: &[Tensor],
    buffers: &[Vec<(String, StateBuffer)>],
    decode: impl Fn(&SavedBuffers, usize, LenCheck<'_>) -> Option<Result<T>>,
) -> Result<Vec<Option<T>>> {
    if buffers.len() != params.len() {
        return Err(Error::invalid(
            op,
            format!(
                "state has {} parameters, the optimizer {}",
                buffers.len(),
                params.len()
            ),
        ));
    }
    params
        .iter()
        .zip(buffers)
        .enumerate()
        .map(|(i, (p, b))| {
            if b.is_empty() {
                return Ok(None);
            }
            let check = |got: usize, want: usize| -> Result<()> {
                if got == want {
                    return Ok(());
                }
                Err(Error::invalid(
                    op,
                    format!(
                        "state buffer of parameter {i} holds {got} values, the parameter needs {want}"
                    ),
                ))
            };
            match decode(b, p.numel(), &check) {
                Some(state) => state.map(Some),
                None => Err(Error::invalid(op, "unrecognised state layout")),
            }
        })
        .collect()
}
