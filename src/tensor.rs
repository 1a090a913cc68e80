//! The tensor handle: a cheap, clonable reference to shape, dtype, storage and autograd state.

use crate::backend::{Data, Device};
use crate::cuts::{self, Cut, Cuts};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{self, Shape};
use crate::storage::{Buffer, Storage};
use std::cell::{Cell, OnceCell, Ref, RefCell};
use std::fmt;
use std::rc::Rc;

/// Where the tape entry that produced a tensor lives: which tape, which generation of it,
/// which slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeId {
    pub tape: u32,
    pub generation: u32,
    pub index: u32,
}

/// A tensor: shape, dtype, contiguous storage, and the autograd state PyTorch gives a tensor
/// (`requires_grad`, the tape entry that made it, its `.grad`). Cloning clones the handle.
#[derive(Clone)]
pub struct Tensor(pub(crate) Rc<TensorImpl>);

pub(crate) struct TensorImpl {
    pub(crate) shape: Shape,
    pub(crate) storage: Rc<Storage>,
    pub(crate) requires_grad: Cell<bool>,
    pub(crate) node: Cell<Option<NodeId>>,
    pub(crate) grad: RefCell<Option<Tensor>>,
    pub(crate) retains_grad: Cell<bool>,
    /// The reentrant segments upstream that cut this tensor's grad path ([`crate::cuts`]).
    pub(crate) cuts: OnceCell<Cuts<TensorImpl>>,
}

impl Tensor {
    pub(crate) fn from_parts(storage: Rc<Storage>, shape: Shape, requires_grad: bool) -> Tensor {
        Tensor(Rc::new(TensorImpl {
            shape,
            storage,
            requires_grad: Cell::new(requires_grad),
            node: Cell::new(None),
            grad: RefCell::new(None),
            retains_grad: Cell::new(false),
            cuts: OnceCell::new(),
        }))
    }

    /// A tensor an op computed (its storage counts as an activation in memory accounting).
    pub(crate) fn activation(data: impl Into<Data>, shape: Shape) -> Tensor {
        Tensor::from_parts(Rc::new(Storage::new(data, true)), shape, false)
    }

    /// Wraps a buffer created by the caller; its element count must match `shape`.
    pub(crate) fn from_buffer(data: Buffer, shape: &[usize]) -> Result<Tensor> {
        if data.len() != shape::checked_numel("from_buffer", shape)? {
            return Err(Error::invalid(
                "from_buffer",
                format!("{} elements cannot have shape {shape:?}", data.len()),
            ));
        }
        Ok(Tensor::from_parts(
            Rc::new(Storage::new(data, false)),
            shape.into(),
            false,
        ))
    }

    /// A tensor from a vector of `f16`, `bf16`, `f32` or `f64` values in row-major order.
    pub fn from_vec<E: Element>(data: Vec<E>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_buffer(Buffer::from_vec(data), shape)
    }

    /// A 0-dimensional f32 tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_parts(
            Rc::new(Storage::new(Buffer::F32(vec![value]), false)),
            Shape::new(),
            false,
        )
    }

    /// A tensor filled with `value`. Shapes with more than 2^60 elements are
    /// [`Error::ShapeTooLarge`]; an allocation the system refuses is [`Error::OutOfMemory`].
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
        let n = shape::checked_numel("full", shape)?;
        let data = Buffer::full("full", dtype, n, value)?;
        Ok(Tensor::from_parts(
            Rc::new(Storage::new(data, false)),
            shape.into(),
            false,
        ))
    }

    /// A tensor of zeros (errors as [`Tensor::full`]).
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype)
    }

    /// A tensor of ones (errors as [`Tensor::full`]).
    pub fn ones(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Standard-normal f32 values from the engine generator ([`crate::rng`]), as a leaf
    /// (errors as [`Tensor::full`]).
    pub fn randn(shape: &[usize]) -> Result<Tensor> {
        let n = shape::checked_numel("randn", shape)?;
        let mut v = crate::cpu::zeroed::<f32>("randn", n)?;
        crate::rng::fill_normal_f32(&mut v);
        Ok(Tensor::from_parts(
            Rc::new(Storage::new(Buffer::F32(v), false)),
            shape.into(),
            false,
        ))
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        shape::numel(&self.0.shape)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.storage.borrow().dtype()
    }

    /// Bytes of element data.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    /// Read access to the storage, on whichever device holds it.
    pub(crate) fn data(&self) -> Ref<'_, Data> {
        self.0.storage.borrow()
    }

    /// The host buffer; a device tensor is [`Error::DeviceMismatch`] naming `op`.
    pub(crate) fn host(&self, op: &'static str) -> Result<Ref<'_, Buffer>> {
        Ref::filter_map(self.data(), |d| d.host(op).ok()).map_err(|d| Error::DeviceMismatch {
            op,
            lhs: "cpu".into(),
            rhs: d.device().to_string(),
        })
    }

    /// The device holding the elements.
    pub fn device(&self) -> Device {
        self.data().device()
    }

    /// The elements, borrowed, as `E` (this tensor's dtype, else [`Error::DTypeMismatch`]; a
    /// device tensor is [`Error::DeviceMismatch`]: copy it with [`Tensor::to_vec`]).
    /// While the guard lives, in-place updates of the tensor are errors.
    pub fn slice<E: Element>(&self) -> Result<Ref<'_, [E]>> {
        Ref::filter_map(self.host("slice")?, |b| b.typed::<E>()).map_err(|b| Error::DTypeMismatch {
            op: "slice",
            lhs: b.dtype(),
            rhs: E::DTYPE,
        })
    }

    /// A copy of the elements as `E` (this tensor's dtype, else [`Error::DTypeMismatch`]),
    /// copied to the host from a device; [`Tensor::to_vec_f32`] and [`Tensor::to_vec_f64`]
    /// convert instead.
    pub fn to_vec<E: Element>(&self) -> Result<Vec<E>> {
        self.with_host("to_vec", |b| {
            b.typed::<E>()
                .map(<[E]>::to_vec)
                .ok_or(Error::DTypeMismatch {
                    op: "to_vec",
                    lhs: b.dtype(),
                    rhs: E::DTYPE,
                })
        })?
    }

    /// `f` on the host buffer: borrowed on the CPU, a copy from a device.
    pub(crate) fn with_host<R>(&self, op: &'static str, f: impl FnOnce(&Buffer) -> R) -> Result<R> {
        let data = self.data();
        if let Ok(b) = data.host(op) {
            return Ok(f(b));
        }
        let copy = data.to_device(&Device::Cpu)?;
        Ok(f(copy.host(op)?))
    }

    /// Changes the elements in place (optimizers updating parameters): `f` gets them as a
    /// slice of `E`, this tensor's dtype, so the length and dtype cannot change. Only leaves may
    /// be updated; the change bumps the version, so a backward that saved this tensor fails as
    /// in PyTorch instead of using the new values. A live [`Tensor::slice`] guard makes it an
    /// error, not a panic.
    pub fn update_data<E: Element>(&self, f: impl FnOnce(&mut [E])) -> Result<()> {
        let mut data = self.writable("update_data")?;
        let have = data.dtype();
        let v = data
            .host_mut("update_data")?
            .typed_mut::<E>()
            .ok_or(Error::DTypeMismatch {
                op: "update_data",
                lhs: have,
                rhs: E::DTYPE,
            })?;
        f(v);
        drop(data);
        self.0.storage.bump_version();
        Ok(())
    }

    /// Replaces the elements with `data` (loading weights), which must have this tensor's
    /// length and dtype; checked before anything changes. Bumps the version as
    /// [`Tensor::update_data`] does.
    pub fn set_data<E: Element>(&self, data: Vec<E>) -> Result<()> {
        self.set_buffer(Buffer::from_vec(data))
    }

    /// [`Tensor::set_data`] with a buffer of any dtype.
    pub(crate) fn set_buffer(&self, data: Buffer) -> Result<()> {
        if data.len() != self.numel() || data.dtype() != self.dtype() {
            return Err(Error::invalid(
                "set_data",
                format!(
                    "got {} {:?} elements for a {:?} tensor of shape {:?}",
                    data.len(),
                    data.dtype(),
                    self.dtype(),
                    self.shape()
                ),
            ));
        }
        let mut slot = self.writable("set_data")?;
        *slot.host_mut("set_data")? = data;
        drop(slot);
        self.0.storage.bump_version();
        Ok(())
    }

    fn writable(&self, op: &'static str) -> Result<std::cell::RefMut<'_, Data>> {
        if !self.is_leaf() {
            return Err(Error::invalid(
                op,
                "only leaf tensors can be updated in place",
            ));
        }
        self.0.storage.try_borrow_mut().ok_or_else(|| {
            Error::invalid(
                op,
                "the tensor's data is borrowed (a `data()` guard is alive); drop it first",
            )
        })
    }

    /// How many in-place changes its storage has had (PyTorch's `_version`).
    pub fn version(&self) -> u32 {
        self.0.storage.version()
    }

    /// The elements widened to `f64` (copied from a device: should that copy fail, the
    /// vector is empty and [`crate::warnings`] holds the error; [`Tensor::to_vec`] returns it).
    pub fn to_vec_f64(&self) -> Vec<f64> {
        self.on_host(Buffer::to_f64_vec)
    }

    /// The elements as `f32` (from a device as [`Tensor::to_vec_f64`]).
    pub fn to_vec_f32(&self) -> Vec<f32> {
        self.on_host(Buffer::to_f32_vec)
    }

    fn on_host<T>(&self, f: impl Fn(&Buffer) -> Vec<T>) -> Vec<T> {
        self.with_host("to_vec", f).unwrap_or_else(|e| {
            crate::warnings::warn(format!(
                "copying a {} tensor to the host: {e}",
                self.device()
            ));
            Vec::new()
        })
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "item",
                format!(
                    "a Tensor with {} elements cannot be converted to Scalar",
                    self.numel()
                ),
            ));
        }
        Ok(self.to_vec_f64()[0])
    }

    /// Whether gradients flow to (or through) this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.get()
    }

    /// True for tensors no recorded op produced (PyTorch's `is_leaf`).
    pub fn is_leaf(&self) -> bool {
        self.0.node.get().is_none()
    }

    pub(crate) fn node(&self) -> Option<NodeId> {
        self.0.node.get()
    }

    /// Sets `requires_grad` on a leaf. On a tensor with no grad path this makes it a leaf that
    /// requires grad: the mechanism behind HF's `enable_input_require_grads`.
    pub fn requires_grad_(&self, requires_grad: bool) -> Result<Tensor> {
        if !self.is_leaf() && !requires_grad {
            return Err(Error::NotALeaf);
        }
        self.0.requires_grad.set(requires_grad || !self.is_leaf());
        Ok(self.clone())
    }

    /// A new handle on the same storage, cut from the graph (no grad path).
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.shape.clone(), false)
    }

    /// A new tensor with its own copy of the data, cut from the graph.
    pub fn deep_clone(&self) -> Tensor {
        let data = self.data().clone();
        Tensor::from_parts(
            Rc::new(Storage::new(data, false)),
            self.0.shape.clone(),
            false,
        )
    }

    /// The accumulated gradient (leaves, and non-leaves after [`Tensor::retain_grad`]).
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.borrow().clone()
    }

    /// Replaces the gradient (`None` clears it, as PyTorch's `zero_grad(set_to_none=True)`).
    pub fn set_grad(&self, grad: Option<Tensor>) {
        *self.0.grad.borrow_mut() = grad;
    }

    /// Clears the gradient.
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// Keeps this non-leaf's gradient after backward (leaves always keep theirs).
    pub fn retain_grad(&self) {
        self.0.retains_grad.set(true);
    }

    pub(crate) fn retains_grad(&self) -> bool {
        self.0.retains_grad.get() || self.is_leaf()
    }

    /// True when both are handles of one tensor (not merely one storage).
    pub fn same_handle(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// True when both handles share one storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// The reentrant cuts upstream of this tensor, oldest first.
    pub(crate) fn cuts(&self) -> &[Rc<Cut<TensorImpl>>] {
        self.0.cuts.get().map_or(&[], |c| c)
    }

    /// True when one of this tensor's upstream cuts left `param` without a gradient.
    pub(crate) fn cut_holds(cut: &Cut<TensorImpl>, param: &Tensor) -> bool {
        cut.holds(Rc::as_ptr(&param.0))
    }

    /// The union of the cuts `inputs` carry (shared, not copied, when only one carries any).
    pub(crate) fn merged_cuts<'a>(
        inputs: impl IntoIterator<Item = &'a Tensor>,
    ) -> Option<Cuts<TensorImpl>> {
        inputs
            .into_iter()
            .filter_map(|t| t.0.cuts.get())
            .fold(None, |acc, c| {
                Some(match acc {
                    None => c.clone(),
                    Some(a) => cuts::union(a, c),
                })
            })
    }

    /// `upstream` plus a cut by reentrant segment `segment` of the parameters `params`.
    pub(crate) fn new_cut(
        upstream: Option<Cuts<TensorImpl>>,
        segment: &str,
        params: &[Tensor],
    ) -> Cuts<TensorImpl> {
        cuts::push(
            upstream,
            segment,
            params.iter().map(|p| Rc::downgrade(&p.0)).collect(),
        )
    }

    /// Marks a fresh tensor as downstream of `cuts`.
    pub(crate) fn set_cuts(&self, cuts: Option<Cuts<TensorImpl>>) {
        if let Some(c) = cuts {
            let _ = self.0.cuts.set(c);
        }
    }

    pub(crate) fn storage(&self) -> &Rc<Storage> {
        &self.0.storage
    }

    /// True when no other handle or view can observe this tensor's storage.
    pub(crate) fn is_exclusive(&self) -> bool {
        Rc::strong_count(&self.0) == 1 && Rc::strong_count(&self.0.storage) == 1
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_vec_f64();
        let head: Vec<f64> = v.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={:?}, dtype={:?}, requires_grad={}, data={head:?}{})",
            self.shape(),
            self.dtype(),
            self.requires_grad(),
            if v.len() > 8 { " …" } else { "" }
        )
    }
}
