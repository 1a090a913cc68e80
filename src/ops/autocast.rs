//! Autocast (mixed precision): inside an `autocast(F16)` scope, each op's inputs are cast by
//! the class its declaration names ([`Cast`]): products lowered to f16 (computed with f32
//! accumulation), the f32 list widened, mixed dtypes promoted, the rest kept (PyTorch's lists).
//! Casts are tape ops, so f32 master weights get f32 gradients; a weight's cast is computed
//! once per scope and reused.

use crate::dtype::DType;
use crate::error::Result;
use crate::ops::spec::Cast;
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::cell::RefCell;

struct State {
    dtype: Option<DType>,
    cache: Vec<(Tensor, Tensor)>,
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State { dtype: None, cache: Vec::new() }) };
}

/// RAII autocast scope; the previous state returns when it drops.
#[must_use = "autocast ends when the guard drops"]
pub struct AutocastGuard {
    prev: Option<DType>,
    prev_cache: Vec<(Tensor, Tensor)>,
}

/// Enters an autocast scope for `dtype` (f16), or leaves autocast for the scope with `None`.
pub fn autocast(dtype: Option<DType>) -> AutocastGuard {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let prev = std::mem::replace(&mut s.dtype, dtype);
        AutocastGuard {
            prev,
            prev_cache: std::mem::take(&mut s.cache),
        }
    })
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.dtype = self.prev;
            s.cache = std::mem::take(&mut self.prev_cache);
        });
    }
}

/// The autocast dtype in force, if any.
pub fn autocast_dtype() -> Option<DType> {
    STATE.with(|s| s.borrow().dtype)
}

/// The inputs of an op of class `class` as autocast wants them (`None`: as given).
pub(crate) fn cast_inputs(
    class: Cast,
    inputs: &[&Tensor],
) -> Result<Option<SmallVec<[Tensor; 4]>>> {
    if class == Cast::Keep || autocast_dtype().is_none() {
        return Ok(None);
    }
    let cast = match class {
        Cast::Lower => true,
        Cast::Widen => inputs.iter().any(|t| t.dtype() == DType::F16),
        Cast::Promote => inputs.windows(2).any(|w| w[0].dtype() != w[1].dtype()),
        Cast::Keep => false,
    };
    if !cast {
        return Ok(None);
    }
    let f = if class == Cast::Lower { lower } else { widen };
    inputs.iter().map(|t| f(t)).collect::<Result<_>>().map(Some)
}

/// For matmul-like ops: `t` in the autocast dtype (cached for leaves that require grad).
fn lower(t: &Tensor) -> Result<Tensor> {
    let Some(dt) = autocast_dtype() else {
        return Ok(t.clone());
    };
    if t.dtype() == dt {
        return Ok(t.clone());
    }
    let cacheable = t.is_leaf() && t.requires_grad();
    if cacheable
        && let Some(hit) = STATE.with(|s| {
            s.borrow()
                .cache
                .iter()
                .find(|(k, _)| k.same_handle(t))
                .map(|(_, v)| v.clone())
        })
    {
        return Ok(hit);
    }
    let cast = {
        let _off = autocast(None);
        t.to_dtype(dt)?
    };
    if cacheable {
        STATE.with(|s| s.borrow_mut().cache.push((t.clone(), cast.clone())));
    }
    Ok(cast)
}

/// For ops that autocast runs in f32: `t` widened to f32 when autocast is on and `t` is f16.
fn widen(t: &Tensor) -> Result<Tensor> {
    if autocast_dtype().is_some() && t.dtype() == DType::F16 {
        let _off = autocast(None);
        return t.to_dtype(DType::F32);
    }
    Ok(t.clone())
}
