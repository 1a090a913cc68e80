//! Autocast (mixed precision): inside an `autocast(F16)` or `autocast(BF16)` scope, each op's
//! inputs are cast by the class its declaration names ([`Cast`]): products lowered to the
//! autocast dtype (computed with f32 accumulation), the f32 list widened, mixed dtypes
//! promoted, the rest kept; losses compute in f32 from half inputs. f16 follows PyTorch's CUDA
//! lists (the GPU recipe), bf16 its CPU lists (`torch.autocast("cpu")`), whose only f32 ops
//! are the losses.
//! Casts are tape ops, so f32 master weights get f32 gradients; a weight's cast is computed
//! once per scope and reused. An op that saves such a cast for backward keeps a recipe instead
//! (the weight and the dtype): backward casts the weight again, the same bits, so the copy
//! lives only while the forward's scope holds it, not until backward.

use crate::backend::BackendStorage;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::spec::Cast;
use crate::storage::Storage;
use crate::tape::memory_add;
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

thread_local! {
    /// The autocast dtype in force (read by every op, so a plain cell).
    static DTYPE: Cell<Option<DType>> = const { Cell::new(None) };
    /// Casts of leaves that require grad, made once per scope.
    static CACHE: RefCell<Vec<(Tensor, Tensor)>> = const { RefCell::new(Vec::new()) };
    /// Storages that hold (or will hold, once backward refills them) a leaf's cast.
    static RECIPES: RefCell<Vec<Recipe>> = const { RefCell::new(Vec::new()) };
}

/// How to remake a leaf's cast: the leaf, the dtype, the leaf's version when it was cast.
struct Recipe {
    of: Weak<Storage>,
    leaf: Tensor,
    dtype: DType,
    version: u32,
}

fn remember(of: &Rc<Storage>, leaf: &Tensor, dtype: DType) {
    of.mark_recipe();
    RECIPES.with(|r| {
        let mut r = r.borrow_mut();
        r.retain(|x| x.of.strong_count() > 0);
        r.push(Recipe {
            of: Rc::downgrade(of),
            leaf: leaf.clone(),
            dtype,
            version: leaf.version(),
        });
    });
}

/// What backward keeps of `t` when it is an autocast cast of a leaf: an empty placeholder
/// that [`refill`] fills by casting the leaf again (`None`: keep `t` itself).
pub(crate) fn recipe_for(t: &Tensor) -> Option<Tensor> {
    if !t.storage().is_recipe() {
        return None;
    }
    let (leaf, dtype) = RECIPES.with(|r| {
        r.borrow()
            .iter()
            .find(|x| x.of.upgrade().is_some_and(|s| Rc::ptr_eq(&s, t.storage())))
            .map(|x| (x.leaf.clone(), x.dtype))
    })?;
    let placeholder = Rc::new(Storage::placeholder(dtype));
    remember(&placeholder, &leaf, dtype);
    Some(Tensor::from_parts(placeholder, t.shape().into(), false))
}

/// Casts the leaf again into `s` when it is a recipe's placeholder awaiting backward; an
/// error when the leaf changed in place since the forward cast it (the cast would differ).
pub(crate) fn refill(s: &Rc<Storage>) -> Result<()> {
    if !s.is_recipe() {
        return Ok(());
    }
    let Some((leaf, dtype, version)) = RECIPES.with(|r| {
        r.borrow()
            .iter()
            .find(|x| x.of.upgrade().is_some_and(|p| Rc::ptr_eq(&p, s)))
            .map(|x| (x.leaf.clone(), x.dtype, x.version))
    }) else {
        return Ok(());
    };
    if leaf.version() != version {
        return Err(Error::invalid(
            "autocast",
            "a weight was changed in place between the forward and its backward: its cast would \
             differ from the one the forward used",
        ));
    }
    let bytes = s.fill_copy(&leaf.data().to_dtype(dtype)?);
    if s.saved_refs() > 0 {
        memory_add(bytes);
    }
    Ok(())
}

/// RAII autocast scope; the previous state returns when it drops.
#[must_use = "autocast ends when the guard drops"]
pub struct AutocastGuard {
    prev: Option<DType>,
    prev_cache: Vec<(Tensor, Tensor)>,
}

/// Enters an autocast scope for `dtype` (f16 or bf16), or leaves autocast for the scope with `None`.
pub fn autocast(dtype: Option<DType>) -> AutocastGuard {
    AutocastGuard {
        prev: DTYPE.with(|d| d.replace(dtype)),
        prev_cache: CACHE.with(|c| std::mem::take(&mut *c.borrow_mut())),
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        DTYPE.with(|d| d.set(self.prev));
        CACHE.with(|c| *c.borrow_mut() = std::mem::take(&mut self.prev_cache));
    }
}

/// The autocast dtype in force, if any.
pub fn autocast_dtype() -> Option<DType> {
    DTYPE.with(|d| d.get())
}

/// The inputs of an op of class `class` as autocast wants them (`None`: as given).
pub(crate) fn cast_inputs(
    class: Cast,
    inputs: &[&Tensor],
) -> Result<Option<SmallVec<[Tensor; 4]>>> {
    let Some(dt) = autocast_dtype() else {
        return Ok(None);
    };
    let half = |t: &&Tensor| matches!(t.dtype(), DType::F16 | DType::BF16);
    let cast = match class {
        Cast::Keep => false,
        Cast::Lower => true,
        Cast::Widen => dt == DType::F16 && inputs.iter().any(half),
        // The op itself computes in f32 from half inputs (no f32 copy to save).
        Cast::Fp32 => false,
        Cast::Promote => inputs.windows(2).any(|w| w[0].dtype() != w[1].dtype()),
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
        && let Some(hit) = CACHE.with(|c| {
            c.borrow()
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
        CACHE.with(|c| c.borrow_mut().push((t.clone(), cast.clone())));
        // Weights (data the caller made), not a checkpoint rerun's inputs (activations made
        // leaves), so a segment's forward and its rerun keep the same tensors.
        if !t.storage().is_activation() {
            remember(cast.storage(), t, dt);
        }
    }
    Ok(cast)
}

/// For ops that autocast runs in f32: `t` widened to f32 when it is f16 or bf16.
fn widen(t: &Tensor) -> Result<Tensor> {
    if matches!(t.dtype(), DType::F16 | DType::BF16) {
        let _off = autocast(None);
        return t.to_dtype(DType::F32);
    }
    Ok(t.clone())
}
