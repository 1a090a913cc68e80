//! A tensor's elements in CUDA memory, behind the kernel interface: the device backend. Its
//! kernels cover what `kernels/` implements for tensor ops — f16 matrix products
//! (`hgemm.cu`: f32 accumulation, one rounding to f16), so matmul and F.linear without a bias
//! run forward and backward on the device; casts go through the host; every other op refuses
//! with [`Error::Unsupported`] naming it (the interface's default bodies). Loss scaling and
//! 8-bit AdamW reach the gradients and parameters in place through `CudaBuffer::f32_mut`.

use super::device::Gpu;
use super::hgemm::{self, Layout as HLayout};
use crate::backend::{BackendStorage, Layout, Product};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::Buffer;
use cudarc::driver::CudaSlice;
use half::f16;
use std::fmt;
use std::rc::Rc;

/// The elements, shared between clones (device memory is copied only when asked).
#[derive(Clone)]
enum Elems {
    F16(Rc<CudaSlice<f16>>),
    F32(Rc<CudaSlice<f32>>),
    /// No elements (an evicted activation), keeping the dtype.
    Empty(DType),
}

/// f16 or f32 elements on one CUDA device.
#[derive(Clone)]
pub struct CudaBuffer {
    gpu: Rc<Gpu>,
    elems: Elems,
    len: usize,
}

impl fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaBuffer(cuda:{}, {:?}, {} elements)",
            self.gpu.ordinal(),
            self.dtype(),
            self.len
        )
    }
}

impl CudaBuffer {
    /// A copy of `b` on `gpu`: f16 and f32 (the dtypes the device kernels take).
    pub(crate) fn from_host(gpu: &Rc<Gpu>, b: &Buffer) -> Result<CudaBuffer> {
        let st = &gpu.stream;
        let elems = match b {
            Buffer::F16(v) if !v.is_empty() => Elems::F16(Rc::new(st.clone_htod(v)?)),
            Buffer::F32(v) if !v.is_empty() => Elems::F32(Rc::new(st.clone_htod(v)?)),
            Buffer::F16(_) | Buffer::F32(_) => Elems::Empty(b.dtype()),
            other => {
                return Err(Error::Unsupported {
                    op: "to_device",
                    device: format!("cuda:{} ({:?} elements)", gpu.ordinal(), other.dtype()),
                });
            }
        };
        Ok(CudaBuffer {
            gpu: gpu.clone(),
            elems,
            len: b.len(),
        })
    }

    /// A host copy of the elements.
    pub(crate) fn to_host(&self) -> Result<Buffer> {
        let st = &self.gpu.stream;
        Ok(match &self.elems {
            Elems::F16(s) => Buffer::F16(st.clone_dtoh(s.as_ref())?),
            Elems::F32(s) => Buffer::F32(st.clone_dtoh(s.as_ref())?),
            Elems::Empty(d) => Buffer::empty(*d),
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        match &self.elems {
            Elems::F16(_) => DType::F16,
            Elems::F32(_) => DType::F32,
            Elems::Empty(d) => *d,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn gpu(&self) -> &Rc<Gpu> {
        &self.gpu
    }

    pub(crate) fn emptied(&self) -> CudaBuffer {
        CudaBuffer {
            gpu: self.gpu.clone(),
            elems: Elems::Empty(self.dtype()),
            len: 0,
        }
    }

    /// The f32 elements for an in-place kernel (a gradient to unscale, a parameter to step);
    /// an error when another tensor shares them or they are not f32.
    pub(crate) fn f32_mut(&mut self, op: &'static str) -> Result<&mut CudaSlice<f32>> {
        match &mut self.elems {
            Elems::F32(s) => Rc::get_mut(s).ok_or_else(|| {
                Error::invalid(op, "the device buffer is shared with another tensor")
            }),
            e => Err(Error::invalid(
                op,
                format!("needs f32 elements, got {:?}", dtype_of(e)),
            )),
        }
    }

    /// The f32 elements, read-only (a gradient an optimizer reads).
    pub(crate) fn f32_ref(&self, op: &'static str) -> Result<&CudaSlice<f32>> {
        match &self.elems {
            Elems::F32(s) => Ok(s),
            e => Err(Error::invalid(
                op,
                format!("needs f32 elements, got {:?}", dtype_of(e)),
            )),
        }
    }

    /// Overwrites the f32 elements with `v` (same length), in place.
    pub(crate) fn write_f32(&mut self, v: &[f32], op: &'static str) -> Result<()> {
        if v.len() != self.len {
            return Err(Error::invalid(op, "the new values' length differs"));
        }
        let gpu = self.gpu.clone();
        if v.is_empty() {
            return Ok(());
        }
        gpu.stream.memcpy_htod(v, self.f32_mut(op)?)?;
        Ok(())
    }

    fn wrap(&self, elems: Elems, len: usize) -> CudaBuffer {
        CudaBuffer {
            gpu: self.gpu.clone(),
            elems,
            len,
        }
    }
}

fn dtype_of(e: &Elems) -> DType {
    match e {
        Elems::F16(_) => DType::F16,
        Elems::F32(_) => DType::F32,
        Elems::Empty(d) => *d,
    }
}

impl BackendStorage for CudaBuffer {
    fn device_name(&self) -> String {
        format!("cuda:{}", self.gpu.ordinal())
    }

    fn zeros(&self, dtype: DType, n: usize, op: &'static str) -> Result<CudaBuffer> {
        let st = &self.gpu.stream;
        let elems = match dtype {
            _ if n == 0 => Elems::Empty(dtype),
            DType::F16 => Elems::F16(Rc::new(st.alloc_zeros::<f16>(n)?)),
            DType::F32 => Elems::F32(Rc::new(st.alloc_zeros::<f32>(n)?)),
            _ => return Err(self.unsupported(op)),
        };
        Ok(self.wrap(elems, n))
    }

    /// Through the host: the CPU's conversions, bit for bit (no cast kernel yet).
    fn to_dtype(&self, dtype: DType) -> Result<CudaBuffer> {
        CudaBuffer::from_host(&self.gpu, &self.to_host()?.cast(dtype))
    }

    /// One f16 product (hgemm: f32 accumulation, rounded once to f16), any layout but both
    /// operands transposed; batched and summed products are not on the device yet.
    fn product(&self, rhs: &CudaBuffer, p: Product, op: &'static str) -> Result<CudaBuffer> {
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: rhs.dtype(),
            });
        }
        if p.m == 0 || p.n == 0 || p.k == 0 {
            // Empty, or sums over nothing: zeros.
            return self.zeros(self.dtype(), p.m * p.n, op);
        }
        let (Elems::F16(a), Elems::F16(b)) = (&self.elems, &rhs.elems) else {
            return Err(self.unsupported(op));
        };
        let layout = match (p.la, p.lb) {
            (Layout::Normal, Layout::Normal) => HLayout::Nn,
            (Layout::Normal, Layout::Transposed) => HLayout::Nt,
            (Layout::Transposed, Layout::Normal) => HLayout::Tn,
            _ => return Err(self.unsupported(op)),
        };
        if p.batch != 1 || p.c_shared {
            return Err(self.unsupported(op));
        }
        let mut c = self.gpu.stream.alloc_zeros::<f16>(p.m * p.n)?;
        hgemm::hgemm_f16(&self.gpu, a, b, &mut c, p.m, p.n, p.k, layout)?;
        Ok(self.wrap(Elems::F16(Rc::new(c)), p.m * p.n))
    }

    fn linear(
        &self,
        w: &CudaBuffer,
        bias: Option<&CudaBuffer>,
        (rows, din, dout): (usize, usize, usize),
    ) -> Result<CudaBuffer> {
        if bias.is_some() {
            return Err(self.unsupported("linear (with a bias)"));
        }
        let p = Product::single((rows, din, dout), Layout::Normal, Layout::Transposed);
        self.product(w, p, "linear")
    }
}
