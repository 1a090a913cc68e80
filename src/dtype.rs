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
    /// tanh as the kernels compute it (for f32 a vectorisable rational approximation).
    fn tanh_k(self) -> Self;
    /// Converts an `f64` constant.
    fn c(x: f64) -> Self;
}

impl Real for f32 {
    fn erf(self) -> Self {
        fast_erf(self)
    }
    fn tanh_k(self) -> Self {
        fast_tanh(self)
    }
    fn c(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn tanh_k(self) -> Self {
        self.tanh()
    }
    fn c(x: f64) -> Self {
        x
    }
}

/// erf for f32 (within 5e-7 of the true value) as a branch-free odd/even rational function on [−4, 4] (Eigen's
/// `generic_fast_erf_float` coefficients), so loops over it vectorise. NaN stays NaN.
pub fn fast_erf(a: f32) -> f32 {
    let x = a.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    if a.is_nan() {
        a
    } else {
        (p / q).clamp(-1.0, 1.0)
    }
}

/// tanh for f32 (within 5e-7 of the true value) as a branch-free 13/6 rational function clamped to ±7.9053 (Eigen's
/// `generic_fast_tanh_float` coefficients), so loops over it vectorise. NaN stays NaN.
pub fn fast_tanh(a: f32) -> f32 {
    let x = a.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p + -8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    p *= x;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    if a.is_nan() || a.abs() < 4e-4 {
        a
    } else {
        p / q
    }
}

/// A storage element: how it converts to and from the type its kernels compute in.
pub trait Element: Copy + Send + Sync + Default + bytemuck::Zeroable + 'static {
    /// The compute type (f16 elements compute in f32, as PyTorch's CPU kernels do).
    type C: Real;
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Widens to the compute type.
    fn to_c(self) -> Self::C;
    /// Rounds from the compute type.
    fn from_c(c: Self::C) -> Self;
    /// Whether the element type differs from its compute type (kernels then convert whole
    /// chunks at once rather than element by element).
    const WIDENS: bool = false;
    /// [`Element::to_c`] over a slice (`dst` as long as `src`).
    fn widen_slice(src: &[Self], dst: &mut [Self::C]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_c();
        }
    }
    /// [`Element::from_c`] over a slice (`dst` as long as `src`).
    fn narrow_slice(src: &[Self::C], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_c(s);
        }
    }
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
    const WIDENS: bool = true;
    // half's slice conversions use F16C eight at a time where the CPU has it; rounding is the
    // same round-to-nearest-even as the scalar path.
    fn widen_slice(src: &[f16], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    fn narrow_slice(src: &[f32], dst: &mut [f16]) {
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(dst, src);
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
