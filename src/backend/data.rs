//! A tensor's storage tagged by device: the CPU's buffer or (feature `cuda`) a device buffer.
//! Ops call the kernel interface on it and it runs the backend its operands share; operands
//! on another device are `Error::DeviceMismatch`, never an implicit copy.

use super::{
    BackendStorage, BinaryOp, Copy2d, Dims, KeyMask, Product, QueryBlocks, Rows, Split, Targets,
    Turn, Unary,
};
#[cfg(feature = "cuda")]
use crate::cuda::{CudaBuffer, Gpu};
use crate::dtype::DType;
#[cfg(feature = "cuda")]
use crate::error::Error;
use crate::error::Result;
use crate::storage::Buffer;
use std::fmt;

/// Where a tensor's elements live.
#[derive(Clone)]
pub enum Device {
    /// Host memory and rewind's CPU kernels (every op).
    Cpu,
    /// A CUDA device (feature `cuda`); its kernels cover the ops `kernels/` implements (f16
    /// matrix products), and the others refuse with [`Error::Unsupported`].
    #[cfg(feature = "cuda")]
    Cuda(std::rc::Rc<Gpu>),
}

impl Device {
    /// CUDA device `ordinal`: a typed error when the driver, NVRTC or the device is missing.
    #[cfg(feature = "cuda")]
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::Cuda(std::rc::Rc::new(Gpu::new(ordinal)?)))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            #[cfg(feature = "cuda")]
            Device::Cuda(g) => write!(f, "cuda:{}", g.ordinal()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            #[cfg(feature = "cuda")]
            (Device::Cuda(a), Device::Cuda(b)) => a.ordinal() == b.ordinal(),
            #[cfg(feature = "cuda")]
            _ => false,
        }
    }
}

/// The elements of one tensor, on the device that holds them.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    Cpu(Buffer),
    #[cfg(feature = "cuda")]
    Cuda(CudaBuffer),
}

impl From<Buffer> for Data {
    fn from(b: Buffer) -> Data {
        Data::Cpu(b)
    }
}

impl Data {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Data::Cpu(b) => b.dtype(),
            #[cfg(feature = "cuda")]
            Data::Cuda(c) => c.dtype(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Data::Cpu(b) => b.len(),
            #[cfg(feature = "cuda")]
            Data::Cuda(c) => c.len(),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.len() * self.dtype().size()
    }

    pub(crate) fn device(&self) -> Device {
        match self {
            Data::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Data::Cuda(c) => Device::Cuda(c.gpu().clone()),
        }
    }

    /// The host buffer; a device tensor is an error naming `op` (move it with `to_device`).
    pub(crate) fn host(&self, op: &'static str) -> Result<&Buffer> {
        self.side(op)
    }

    /// The host buffer, mutably; a device tensor is an error naming `op`.
    pub(crate) fn host_mut(&mut self, op: &'static str) -> Result<&mut Buffer> {
        self.side_mut(op)
    }

    /// No elements, the same dtype and device (a checkpoint's evicted activation).
    pub(crate) fn emptied(&self) -> Data {
        match self {
            Data::Cpu(b) => Data::Cpu(Buffer::empty(b.dtype())),
            #[cfg(feature = "cuda")]
            Data::Cuda(c) => Data::Cuda(c.emptied()),
        }
    }

    /// A copy of the elements on `device` (the same storage's clone when already there).
    pub(crate) fn to_device(&self, device: &Device) -> Result<Data> {
        match (self, device) {
            (Data::Cpu(b), Device::Cpu) => Ok(Data::Cpu(b.clone())),
            #[cfg(feature = "cuda")]
            (Data::Cpu(b), Device::Cuda(g)) => Ok(Data::Cuda(CudaBuffer::from_host(g, b)?)),
            #[cfg(feature = "cuda")]
            (Data::Cuda(c), Device::Cpu) => Ok(Data::Cpu(c.to_host()?)),
            #[cfg(feature = "cuda")]
            (Data::Cuda(c), Device::Cuda(g)) if c.gpu().ordinal() == g.ordinal() => {
                Ok(Data::Cuda(c.clone()))
            }
            #[cfg(feature = "cuda")]
            (Data::Cuda(c), Device::Cuda(g)) => {
                Ok(Data::Cuda(CudaBuffer::from_host(g, &c.to_host()?)?))
            }
        }
    }
}

/// One backend's storage taken out of [`Data`]: another device's is a `DeviceMismatch`.
pub(crate) trait Side<T> {
    fn side(&self, op: &'static str) -> Result<&T>;
    fn side_mut(&mut self, op: &'static str) -> Result<&mut T>;
}

#[cfg(feature = "cuda")]
fn mismatch(op: &'static str, want: &str, got: &Data) -> Error {
    Error::DeviceMismatch {
        op,
        lhs: want.to_string(),
        rhs: got.device().to_string(),
    }
}

#[cfg_attr(not(feature = "cuda"), allow(unused_variables))] // one device: no mismatch
impl Side<Buffer> for Data {
    fn side(&self, op: &'static str) -> Result<&Buffer> {
        match self {
            Data::Cpu(b) => Ok(b),
            #[cfg(feature = "cuda")]
            d => Err(mismatch(op, "cpu", d)),
        }
    }
    fn side_mut(&mut self, op: &'static str) -> Result<&mut Buffer> {
        match self {
            Data::Cpu(b) => Ok(b),
            #[cfg(feature = "cuda")]
            d => Err(mismatch(op, "cpu", d)),
        }
    }
}

#[cfg(feature = "cuda")]
impl Side<CudaBuffer> for Data {
    fn side(&self, op: &'static str) -> Result<&CudaBuffer> {
        match self {
            Data::Cuda(c) => Ok(c),
            d => Err(mismatch(op, "cuda", d)),
        }
    }
    fn side_mut(&mut self, op: &'static str) -> Result<&mut CudaBuffer> {
        match self {
            Data::Cuda(c) => Ok(c),
            d => Err(mismatch(op, "cuda", d)),
        }
    }
}

/// An optional operand of the same backend.
fn opt<'a, T>(x: Option<&'a Data>, op: &'static str) -> Result<Option<&'a T>>
where
    Data: Side<T>,
{
    x.map(|x| x.side(op)).transpose()
}

/// A backend's results wrapped back into [`Data`].
pub(crate) trait Up {
    type Out;
    fn up(self) -> Self::Out;
}

impl Up for () {
    type Out = ();
    fn up(self) {}
}

macro_rules! up_for {
    ($b:ty, $v:ident) => {
        impl Up for $b {
            type Out = Data;
            fn up(self) -> Data {
                Data::$v(self)
            }
        }
        impl Up for ($b, Vec<usize>) {
            type Out = (Data, Vec<usize>);
            fn up(self) -> Self::Out {
                (Data::$v(self.0), self.1)
            }
        }
        impl Up for ($b, Vec<f64>) {
            type Out = (Data, Vec<f64>);
            fn up(self) -> Self::Out {
                (Data::$v(self.0), self.1)
            }
        }
        impl Up for ($b, $b) {
            type Out = (Data, Data);
            fn up(self) -> Self::Out {
                (Data::$v(self.0), Data::$v(self.1))
            }
        }
        impl Up for ($b, $b, $b) {
            type Out = (Data, Data, Data);
            fn up(self) -> Self::Out {
                (Data::$v(self.0), Data::$v(self.1), Data::$v(self.2))
            }
        }
        impl Up for (Option<$b>, Option<$b>) {
            type Out = (Option<Data>, Option<Data>);
            fn up(self) -> Self::Out {
                (self.0.map(Data::$v), self.1.map(Data::$v))
            }
        }
    };
}
up_for!(Buffer, Cpu);
#[cfg(feature = "cuda")]
up_for!(CudaBuffer, Cuda);

/// Runs `$body` with `$s` bound to `$self`'s backend storage (the other operands taken with
/// `side`, which infers the backend), the result wrapped back into `Data`.
macro_rules! run {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Data::Cpu($s) => $body.map(Up::up),
            #[cfg(feature = "cuda")]
            Data::Cuda($s) => $body.map(Up::up),
        }
    };
}

impl BackendStorage for Data {
    fn device_name(&self) -> String {
        self.device().to_string()
    }
    fn zeros(&self, dtype: DType, n: usize, op: &'static str) -> Result<Data> {
        run!(self, s => s.zeros(dtype, n, op))
    }
    fn to_dtype(&self, dtype: DType) -> Result<Data> {
        run!(self, s => s.to_dtype(dtype))
    }
    #[inline]
    fn unary<U: Unary>(&self, op: U) -> Result<Data> {
        run!(self, s => s.unary(op))
    }
    #[inline]
    fn unary_grad<U: Unary>(&self, saved: Option<&Data>, op: U) -> Result<Data> {
        run!(self, s => s.unary_grad(opt(saved, U::SPEC.name)?, op))
    }
    fn binary(
        &self,
        rhs: &Data,
        kind: BinaryOp,
        shapes: (&[usize], &[usize], &[usize]),
        op: &'static str,
    ) -> Result<Data> {
        run!(self, s => s.binary(rhs.side(op)?, kind, shapes, op))
    }
    fn sum_to(&self, from: &[usize], to: &[usize]) -> Result<Data> {
        run!(self, s => s.sum_to(from, to))
    }
    fn product(&self, rhs: &Data, p: Product, op: &'static str) -> Result<Data> {
        run!(self, s => s.product(rhs.side(op)?, p, op))
    }
    fn linear(&self, w: &Data, bias: Option<&Data>, dims: (usize, usize, usize)) -> Result<Data> {
        run!(self, s => s.linear(w.side("linear")?, opt(bias, "linear")?, dims))
    }
    fn sum(&self, split: Option<Split>, scale: f64, op: &'static str) -> Result<Data> {
        run!(self, s => s.sum(split, scale, op))
    }
    fn max(&self, split: Split, op: &'static str) -> Result<(Data, Vec<usize>)> {
        run!(self, s => s.max(split, op))
    }
    fn max_all(&self) -> Result<(Data, Vec<usize>)> {
        run!(self, s => s.max_all())
    }
    fn spread(&self, split: Option<Split>, n: usize, scale: f64) -> Result<Data> {
        run!(self, s => s.spread(split, n, scale))
    }
    fn scatter_axis(&self, at: &[usize], split: Split, op: &'static str) -> Result<Data> {
        run!(self, s => s.scatter_axis(at, split, op))
    }
    fn share(&self, ties: &[usize], n: usize, op: &'static str) -> Result<Data> {
        run!(self, s => s.share(ties, n, op))
    }
    fn softmax(&self, split: Split, log: bool) -> Result<Data> {
        run!(self, s => s.softmax(split, log))
    }
    fn softmax_grad(&self, y: &Data, split: Split, log: bool) -> Result<Data> {
        run!(self, s => s.softmax_grad(y.side("softmax_backward")?, split, log))
    }
    fn layer_norm(
        &self,
        w: Option<&Data>,
        b: Option<&Data>,
        d: usize,
        eps: f64,
    ) -> Result<(Data, Data, Data)> {
        let op = "layer_norm";
        run!(self, s => s.layer_norm(opt(w, op)?, opt(b, op)?, d, eps))
    }
    fn layer_norm_grad(
        &self,
        x: &Data,
        rstd: &Data,
        w: Option<&Data>,
        d: usize,
        param_grads: bool,
    ) -> Result<(Data, Data, Data)> {
        let op = "layer_norm_backward";
        run!(self, s => s.layer_norm_grad(x.side(op)?, rstd.side(op)?, opt(w, op)?, d, param_grads))
    }
    fn rms_norm(&self, w: &Data, d: usize, eps: f64) -> Result<(Data, Data)> {
        run!(self, s => s.rms_norm(w.side("rms_norm")?, d, eps))
    }
    fn rms_norm_grad(&self, x: &Data, rstd: &Data, w: &Data, d: usize) -> Result<(Data, Data)> {
        let op = "rms_norm_backward";
        run!(self, s => s.rms_norm_grad(x.side(op)?, rstd.side(op)?, w.side(op)?, d))
    }
    fn cross_entropy(&self, c: usize, t: Targets, out: DType) -> Result<(Data, Vec<f64>)> {
        run!(self, s => s.cross_entropy(c, t, out))
    }
    fn cross_entropy_grad(&self, z: &Data, lse: &[f64], t: Targets) -> Result<Data> {
        run!(self, s => s.cross_entropy_grad(z.side("cross_entropy_backward")?, lse, t))
    }
    fn cross_entropy_grad_in_place(&self, z: &mut Data, lse: &[f64], t: Targets) -> Result<()> {
        run!(self, s => s.cross_entropy_grad_in_place(z.side_mut("cross_entropy_backward")?, lse, t))
    }
    fn copy2d(&self, dst: &mut Data, c: Copy2d, add: bool) -> Result<()> {
        run!(self, s => s.copy2d(dst.side_mut("copy2d")?, c, add))
    }
    fn permute(&self, shape: &[usize], dims: &[usize]) -> Result<Data> {
        run!(self, s => s.permute(shape, dims))
    }
    fn index_select(&self, ids: &[i64], d: usize) -> Result<Data> {
        run!(self, s => s.index_select(ids, d))
    }
    fn index_add(&self, ids: &[i64], rows_d: (usize, usize), skip: Option<i64>) -> Result<Data> {
        run!(self, s => s.index_add(ids, rows_d, skip))
    }
    fn masked_fill(&self, mask: &Data, shapes: (&[usize], &[usize]), value: f64) -> Result<Data> {
        run!(self, s => s.masked_fill(mask.side("masked_fill")?, shapes, value))
    }
    fn dropout_mask(&self, p: f64) -> Result<Data> {
        run!(self, s => s.dropout_mask(p))
    }
    fn rotate(&self, angles: &[(f32, f32)], turn: Turn) -> Result<Data> {
        run!(self, s => s.rotate(angles, turn))
    }
    fn attention_softmax(&self, rows: Rows, mask: &KeyMask, scale: f64) -> Result<Data> {
        run!(self, s => s.attention_softmax(rows, mask, scale))
    }
    fn attention_softmax_grad(
        &self,
        y: &Data,
        t_scale: (usize, f64),
        dtype: DType,
    ) -> Result<Data> {
        run!(self, s => s.attention_softmax_grad(y.side("attention_softmax_backward")?, t_scale, dtype))
    }
    fn attention_probs(
        &self,
        k: &Data,
        n: Dims,
        qb: &QueryBlocks,
        mask: &KeyMask,
        scale: f64,
    ) -> Result<Data> {
        run!(self, s => s.attention_probs(k.side("attention_probs")?, n, qb, mask, scale))
    }
    fn attention_probs_grad(
        &self,
        y: &Data,
        (q, k): (Option<&Data>, Option<&Data>),
        n: Dims,
        qb: &QueryBlocks,
        scale: f64,
    ) -> Result<(Option<Data>, Option<Data>)> {
        let op = "attention_probs_backward";
        run!(self, s => s.attention_probs_grad(y.side(op)?, (opt(q, op)?, opt(k, op)?), n, qb, scale))
    }
    fn attention_context(&self, v: &Data, n: Dims, qb: &QueryBlocks) -> Result<Data> {
        run!(self, s => s.attention_context(v.side("attention_context")?, n, qb))
    }
    fn attention_context_grad(
        &self,
        (p, v): (Option<&Data>, Option<&Data>),
        n: Dims,
        qb: &QueryBlocks,
    ) -> Result<(Option<Data>, Option<Data>)> {
        let op = "attention_context_backward";
        run!(self, s => s.attention_context_grad((opt(p, op)?, opt(v, op)?), n, qb))
    }
}
