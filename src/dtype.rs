//! Element types a tensor can hold, and the numeric traits the kernels are generic over.

use half::f16;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision (mixed-precision activations).
    F16,
    /// Single precision, the default.
    F32,
    /// Double precision, for gradient checking.
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

/// The arithmetic a kernel computes in: `f32` (also for f16 storage) or `f64`.
pub trait Real:
    num_traits::Float
    + num_traits::FromPrimitive
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::MulAssign
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// The error function (for exact GELU).
    fn erf(self) -> Self;
    /// Converts an `f64` constant.
    fn c(x: f64) -> Self;
}

impl Real for f32 {
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn c(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn c(x: f64) -> Self {
        x
    }
}

/// A storage element: how it converts to and from the type its kernels compute in.
pub trait Element: Copy + Send + Sync + Default + 'static {
    /// The compute type (f16 elements compute in f32, as PyTorch's CPU kernels do).
    type C: Real;
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Widens to the compute type.
    fn to_c(self) -> Self::C;
    /// Rounds from the compute type.
    fn from_c(c: Self::C) -> Self;
}

impl Element for f16 {
    type C = f32;
    const DTYPE: DType = DType::F16;
    fn to_c(self) -> f32 {
        self.to_f32()
    }
    fn from_c(c: f32) -> Self {
        f16::from_f32(c)
    }
}

impl Element for f32 {
    type C = f32;
    const DTYPE: DType = DType::F32;
    fn to_c(self) -> f32 {
        self
    }
    fn from_c(c: f32) -> Self {
        c
    }
}

impl Element for f64 {
    type C = f64;
    const DTYPE: DType = DType::F64;
    fn to_c(self) -> f64 {
        self
    }
    fn from_c(c: f64) -> Self {
        c
    }
}
