//! Layers built on the ops: Linear, Embedding, LayerNorm, Dropout, LoRA, causal (grouped-query)
//! attention, and a residual MLP stack (the checkpointing benchmarks' workload), with parameters
//! collected by dotted name and forward hooks on outputs.

pub mod attention;
mod dropout;
mod embedding;
mod hooks;
mod layer_norm;
mod linear;
mod lora;
mod residual_mlp;

pub use dropout::Dropout;
pub use embedding::Embedding;
pub use hooks::{ForwardHooks, HookHandle};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use lora::{LoraLinear, Projection};
pub use residual_mlp::{MlpBlock, ResidualMlp};

use crate::error::Result;
use crate::tensor::Tensor;

/// Anything that owns parameters, listed by dotted name (`blocks.0.fc1.weight`).
pub trait Parameters {
    /// Every parameter with its name relative to this module.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Every parameter, in the order of [`Parameters::named_parameters`].
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }
}

/// A layer mapping one tensor to one tensor.
pub trait Module: Parameters {
    /// Applies the layer (and runs its forward hooks, where it has them).
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

/// Prefixes each name with `prefix.` (for composing children's parameters).
pub fn prefixed(prefix: &str, params: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    params
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

/// Freezes every parameter whose name starts with `prefix` (requires_grad = false); returns
/// how many. A frozen prefix of a network records no tape entries and saves nothing.
pub fn freeze(params: &[(String, Tensor)], prefix: &str) -> Result<usize> {
    set_trainable(params, prefix, false)
}

/// Makes every parameter whose name starts with `prefix` trainable again; returns how many.
pub fn unfreeze(params: &[(String, Tensor)], prefix: &str) -> Result<usize> {
    set_trainable(params, prefix, true)
}

fn set_trainable(params: &[(String, Tensor)], prefix: &str, on: bool) -> Result<usize> {
    let mut count = 0;
    for (_, p) in params.iter().filter(|(name, _)| name.starts_with(prefix)) {
        p.requires_grad_(on)?;
        count += 1;
    }
    Ok(count)
}

thread_local! {
    static SKIPPING_INIT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// While one lives, layers built on this thread start as zeros instead of draws from the
/// engine generator (left untouched): for a model whose weights are loaded next, as
/// transformers' `no_init_weights`. The zeros are pages the system has not yet handed out, so
/// a 125M-parameter model is built in no time and its loaded weights replace them.
pub struct SkipInit {
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl SkipInit {
    /// Skips initialisation until dropped.
    #[allow(clippy::new_without_default)] // a guard: made on purpose, never by default
    pub fn new() -> SkipInit {
        SKIPPING_INIT.with(|c| c.set(c.get() + 1));
        SkipInit {
            _this_thread: std::marker::PhantomData,
        }
    }
}

impl Drop for SkipInit {
    fn drop(&mut self) {
        SKIPPING_INIT.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Whether a [`SkipInit`] lives on this thread.
pub(crate) fn skipping_init() -> bool {
    SKIPPING_INIT.with(|c| c.get() > 0)
}

/// A tensor of uniform draws in [−bound, bound) from the engine generator, as a parameter
/// (zeros under [`SkipInit`]).
pub(crate) fn uniform_param(shape: &[usize], bound: f64) -> Result<Tensor> {
    if skipping_init() {
        return Tensor::zeros(shape, crate::dtype::DType::F32)?.requires_grad_(true);
    }
    let n = crate::shape::numel(shape);
    let v: Vec<f32> = crate::rng::uniform_vec(n)
        .into_iter()
        .map(|u| ((2.0 * u - 1.0) * bound) as f32)
        .collect();
    Tensor::from_vec(v, shape)?.requires_grad_(true)
}
