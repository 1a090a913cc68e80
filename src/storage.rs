//! Where a tensor's numbers live: a typed CPU vector, private to the engine. Users reach a
//! tensor's elements through typed accessors ([`crate::Tensor::slice`], `to_vec`,
//! `update_data`, `set_data`); the ops see slices through `with_buffer!`.

use crate::backend::Data;
use crate::cpu;
use crate::dtype::{DType, Element};
use crate::error::Result;
use half::{bf16, f16};
use std::cell::{Cell, Ref, RefCell, RefMut};

/// A typed, contiguous block of elements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Buffer {
    /// Half-precision elements.
    F16(Vec<f16>),
    /// bfloat16 elements.
    BF16(Vec<bf16>),
    /// Single-precision elements.
    F32(Vec<f32>),
    /// Double-precision elements.
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the buffer's `Vec<E>` for whichever element type it holds.
macro_rules! with_buffer {
    ($buf:expr, $v:ident => $body:expr) => {
        match $buf {
            $crate::storage::Buffer::F16($v) => $body,
            $crate::storage::Buffer::BF16($v) => $body,
            $crate::storage::Buffer::F32($v) => $body,
            $crate::storage::Buffer::F64($v) => $body,
        }
    };
}
pub(crate) use with_buffer;

/// Wraps a vector of any element type into a [`Buffer`].
pub(crate) trait IntoBuffer {
    /// The wrapped buffer.
    fn into_buffer(self) -> Buffer;
}
impl IntoBuffer for Vec<f16> {
    fn into_buffer(self) -> Buffer {
        Buffer::F16(self)
    }
}
impl IntoBuffer for Vec<bf16> {
    fn into_buffer(self) -> Buffer {
        Buffer::BF16(self)
    }
}
impl IntoBuffer for Vec<f32> {
    fn into_buffer(self) -> Buffer {
        Buffer::F32(self)
    }
}
impl IntoBuffer for Vec<f64> {
    fn into_buffer(self) -> Buffer {
        Buffer::F64(self)
    }
}

impl Buffer {
    /// `v` as a buffer of its element type.
    pub(crate) fn from_vec<E: Element>(v: Vec<E>) -> Buffer {
        let mut v = Some(v);
        let any = &mut v as &mut dyn std::any::Any;
        // Element is sealed to these four types, so one of the downcasts takes it.
        if let Some(v) = any.downcast_mut::<Option<Vec<f32>>>() {
            return Buffer::F32(v.take().unwrap_or_default());
        }
        if let Some(v) = any.downcast_mut::<Option<Vec<bf16>>>() {
            return Buffer::BF16(v.take().unwrap_or_default());
        }
        if let Some(v) = any.downcast_mut::<Option<Vec<f16>>>() {
            return Buffer::F16(v.take().unwrap_or_default());
        }
        match any.downcast_mut::<Option<Vec<f64>>>() {
            Some(v) => Buffer::F64(v.take().unwrap_or_default()),
            None => unreachable!("Element is sealed to f16, bf16, f32 and f64"),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Buffer::F16(_) => DType::F16,
            Buffer::BF16(_) => DType::BF16,
            Buffer::F32(_) => DType::F32,
            Buffer::F64(_) => DType::F64,
        }
    }

    /// An empty buffer of `dtype`.
    pub fn empty(dtype: DType) -> Buffer {
        match dtype {
            DType::F16 => Buffer::F16(Vec::new()),
            DType::BF16 => Buffer::BF16(Vec::new()),
            DType::F32 => Buffer::F32(Vec::new()),
            DType::F64 => Buffer::F64(Vec::new()),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_buffer!(self, v => v.len())
    }

    /// A buffer of `n` zeros; [`Error::OutOfMemory`](crate::Error::OutOfMemory) naming `op`
    /// when the allocator refuses.
    pub fn zeros(op: &'static str, dtype: DType, n: usize) -> Result<Buffer> {
        Ok(match dtype {
            DType::F16 => Buffer::F16(cpu::zeroed(op, n)?),
            DType::BF16 => Buffer::BF16(cpu::zeroed(op, n)?),
            DType::F32 => Buffer::F32(cpu::zeroed(op, n)?),
            DType::F64 => Buffer::F64(cpu::zeroed(op, n)?),
        })
    }

    /// A buffer of `n` copies of `value` (rounded to the dtype), fallible like [`Buffer::zeros`].
    pub fn full(op: &'static str, dtype: DType, n: usize, value: f64) -> Result<Buffer> {
        if value == 0.0 && !value.is_sign_negative() {
            // Fresh pages come zeroed: no pass at all.
            return Buffer::zeros(op, dtype, n);
        }
        Ok(match dtype {
            DType::F16 => Buffer::F16(cpu::filled(op, n, f16::from_f64(value))?),
            DType::BF16 => Buffer::BF16(cpu::filled(op, n, bf16::from_f64(value))?),
            DType::F32 => Buffer::F32(cpu::filled(op, n, value as f32)?),
            DType::F64 => Buffer::F64(cpu::filled(op, n, value)?),
        })
    }

    /// Converts every element to `dtype` (round to nearest).
    pub fn cast(&self, dtype: DType) -> Buffer {
        fn conv<S: Element, D: Element>(v: &[S]) -> Vec<D> {
            v.iter()
                .map(|x| {
                    let wide = num_traits::ToPrimitive::to_f64(&x.to_c()).unwrap_or(f64::NAN);
                    D::from_c(<D::C as crate::dtype::Real>::c(wide))
                })
                .collect()
        }
        match (self, dtype) {
            (b, d) if b.dtype() == d => b.clone(),
            // f16 ↔ f32 through half's vectorised slice conversions (F16C where present).
            (Buffer::F16(v), DType::F32) => {
                let mut out = vec![0.0f32; v.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[..], &mut out);
                Buffer::F32(out)
            }
            (Buffer::F32(v), DType::F16) => {
                let mut out = vec![f16::ZERO; v.len()];
                half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut out[..], v);
                Buffer::F16(out)
            }
            (Buffer::BF16(v), DType::F32) => {
                Buffer::F32(v.iter().map(|&x| crate::dtype::bf16_to_f32(x)).collect())
            }
            (Buffer::F32(v), DType::BF16) => {
                Buffer::BF16(v.iter().map(|&x| crate::dtype::f32_to_bf16(x)).collect())
            }
            // Direct roundings: going through f32 first would round twice.
            (Buffer::F64(v), DType::F16) => {
                Buffer::F16(v.iter().map(|&x| f16::from_f64(x)).collect())
            }
            (Buffer::F64(v), DType::BF16) => {
                Buffer::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect())
            }
            (b, DType::F16) => with_buffer!(b, v => Buffer::F16(conv(v))),
            (b, DType::BF16) => with_buffer!(b, v => Buffer::BF16(conv(v))),
            (b, DType::F32) => with_buffer!(b, v => Buffer::F32(conv(v))),
            (b, DType::F64) => with_buffer!(b, v => Buffer::F64(conv(v))),
        }
    }

    /// Every element widened to `f64` (for inspection and tests).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self.cast(DType::F64) {
            Buffer::F64(v) => v,
            _ => unreachable!(),
        }
    }

    /// Every element as `f32`.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.cast(DType::F32) {
            Buffer::F32(v) => v,
            _ => unreachable!(),
        }
    }

    /// The elements as a slice of `E`, when `E` is this buffer's element type.
    pub fn typed<E: Element>(&self) -> Option<&[E]> {
        with_buffer!(self, v => (v as &dyn std::any::Any).downcast_ref::<Vec<E>>().map(|v| v.as_slice()))
    }

    /// The elements as a mutable slice of `E`, when `E` is this buffer's element type.
    pub fn typed_mut<E: Element>(&mut self) -> Option<&mut [E]> {
        with_buffer!(self, v => (v as &mut dyn std::any::Any).downcast_mut::<Vec<E>>().map(|v| v.as_mut_slice()))
    }
}

thread_local! {
    /// In-place changes on this thread so far: backward skips the version check of an entry
    /// recorded at the current count (nothing can have changed since).
    static INPLACE_EPOCH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Activations made on this thread so far (each storage's birth number).
    static BORN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The birth number the next activation made on this thread gets.
pub(crate) fn next_birth() -> u64 {
    BORN.with(|b| b.get())
}

/// The thread's count of in-place changes.
pub(crate) fn inplace_epoch() -> u32 {
    INPLACE_EPOCH.with(|e| e.get())
}

/// Shared storage behind one or more tensor handles (views share it).
#[derive(Debug)]
pub(crate) struct Storage {
    data: RefCell<Data>,
    /// How many live tape entries hold this storage for backward.
    saved_refs: Cell<u32>,
    /// True when an op produced it (an activation); false for data the caller created.
    activation: bool,
    /// In-place changes so far (PyTorch's version counter, shared by every view).
    version: Cell<u32>,
    /// When it was made, among the thread's activations (0 for data the caller created): a
    /// checkpoint segment packs only what was made inside it.
    born: u64,
    /// Emptied by checkpointing: a recomputation refills it before backward reads it.
    pending: Cell<bool>,
    /// Holds (or awaits) an autocast cast of a weight that backward can make again.
    recipe: Cell<bool>,
}

impl Storage {
    pub(crate) fn new(data: impl Into<Data>, activation: bool) -> Self {
        let born = if activation {
            BORN.with(|b| {
                let n = b.get() + 1;
                b.set(n);
                n
            })
        } else {
            0
        };
        Storage {
            data: RefCell::new(data.into()),
            saved_refs: Cell::new(0),
            activation,
            version: Cell::new(0),
            born,
            pending: Cell::new(false),
            recipe: Cell::new(false),
        }
    }

    /// An empty activation of `dtype` waiting to be refilled (a checkpoint's placeholder).
    pub(crate) fn placeholder(dtype: DType) -> Self {
        let s = Storage::new(Buffer::empty(dtype), true);
        s.pending.set(true);
        s
    }
    /// Its birth number ([`next_birth`] when it was made; 0 for the caller's data).
    pub(crate) fn born(&self) -> u64 {
        self.born
    }
    /// True while checkpointing holds it empty.
    pub(crate) fn mark_recipe(&self) {
        self.recipe.set(true);
    }
    /// True for a weight's autocast cast (or its placeholder): `ops::autocast` knows how to
    /// make it again.
    pub(crate) fn is_recipe(&self) -> bool {
        self.recipe.get()
    }
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.get()
    }
    /// Frees the elements (keeping the dtype) and marks it pending; returns the bytes freed.
    pub(crate) fn evict(&self) -> usize {
        let mut d = self.data.borrow_mut();
        let bytes = d.bytes();
        *d = d.emptied();
        self.pending.set(true);
        bytes
    }
    /// Takes the elements out for reuse, leaving it empty (not pending: nothing refills it);
    /// returns them and the bytes no longer saved (all of them while a tape entry saves it).
    pub(crate) fn take(&self) -> (Data, usize) {
        let mut d = self.data.borrow_mut();
        let empty = d.emptied();
        let taken = std::mem::replace(&mut *d, empty);
        let saved = if self.saved_refs.get() > 0 {
            taken.bytes()
        } else {
            0
        };
        (taken, saved)
    }
    /// Puts back what [`Storage::take`] took; returns the bytes saved again.
    pub(crate) fn restore(&self, data: Data) -> usize {
        let saved = if self.saved_refs.get() > 0 {
            data.bytes()
        } else {
            0
        };
        *self.data.borrow_mut() = data;
        saved
    }
    /// Takes `from`'s elements (leaving it empty) and clears the pending mark; returns the
    /// bytes received.
    pub(crate) fn fill_from(&self, from: &Storage) -> usize {
        std::mem::swap(&mut *self.data.borrow_mut(), &mut *from.data.borrow_mut());
        self.pending.set(false);
        self.data.borrow().bytes()
    }
    /// Takes a copy of `buf` and clears the pending mark; returns the bytes received.
    pub(crate) fn fill_copy(&self, buf: &Data) -> usize {
        *self.data.borrow_mut() = buf.clone();
        self.pending.set(false);
        buf.bytes()
    }
    pub(crate) fn version(&self) -> u32 {
        self.version.get()
    }
    pub(crate) fn bump_version(&self) {
        self.version.set(self.version.get().wrapping_add(1));
        INPLACE_EPOCH.with(|e| e.set(e.get().wrapping_add(1)));
    }
    pub(crate) fn borrow(&self) -> Ref<'_, Data> {
        self.data.borrow()
    }
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, Data> {
        self.data.borrow_mut()
    }
    /// A mutable borrow, or `None` while a read guard ([`crate::Tensor::data`]) is alive.
    pub(crate) fn try_borrow_mut(&self) -> Option<RefMut<'_, Data>> {
        self.data.try_borrow_mut().ok()
    }
    pub(crate) fn is_activation(&self) -> bool {
        self.activation
    }
    /// How many live tape entries hold this storage for backward.
    pub(crate) fn saved_refs(&self) -> u32 {
        self.saved_refs.get()
    }
    /// Registers one more saver; returns the bytes that became newly saved (0 if already saved).
    pub(crate) fn retain_saved(&self) -> usize {
        let n = self.saved_refs.get();
        self.saved_refs.set(n + 1);
        if n == 0 {
            self.data.borrow().bytes()
        } else {
            0
        }
    }
    /// Drops one saver; returns the bytes no longer saved (0 if others still hold it).
    pub(crate) fn release_saved(&self) -> usize {
        let n = self.saved_refs.get();
        debug_assert!(n > 0);
        self.saved_refs.set(n.saturating_sub(1));
        if n == 1 {
            self.data.borrow().bytes()
        } else {
            0
        }
    }
}

/// Runs `$body` with `$x`, `$y` bound to two buffers' vectors of one element type; different
/// element types give `Err(Error::DTypeMismatch)` naming `$op`.
macro_rules! zip_buffers {
    ($op:expr, $a:expr, $b:expr, $x:ident, $y:ident => $body:expr) => {
        match ($a, $b) {
            ($crate::storage::Buffer::F16($x), $crate::storage::Buffer::F16($y)) => Ok($body),
            ($crate::storage::Buffer::BF16($x), $crate::storage::Buffer::BF16($y)) => Ok($body),
            ($crate::storage::Buffer::F32($x), $crate::storage::Buffer::F32($y)) => Ok($body),
            ($crate::storage::Buffer::F64($x), $crate::storage::Buffer::F64($y)) => Ok($body),
            (a, b) => Err($crate::error::Error::DTypeMismatch {
                op: $op,
                lhs: a.dtype(),
                rhs: b.dtype(),
            }),
        }
    };
}
pub(crate) use zip_buffers;
