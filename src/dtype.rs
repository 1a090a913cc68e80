//! Element types a tensor can hold, and the numeric traits the kernels are generic over.

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision (mixed-precision activations).
    F16,
    /// bfloat16: f32's exponent, 8 bits of mantissa (CPU mixed precision, as PyTorch's).
    BF16,
    /// Single precision, the default.
    F32,
    /// Double precision, for gradient checking.
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
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
    /// eˣ as the kernels compute it (for f32 a vectorisable polynomial, within 2 ulps).
    fn exp_k(self) -> Self;
    /// Converts an `f64` constant.
    fn c(x: f64) -> Self;
}

impl Real for f32 {
    #[inline(always)]
    fn erf(self) -> Self {
        fast_erf(self)
    }
    #[inline(always)]
    fn tanh_k(self) -> Self {
        fast_tanh(self)
    }
    #[inline(always)]
    fn exp_k(self) -> Self {
        fast_exp(self)
    }
    fn c(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    #[inline(always)]
    fn erf(self) -> Self {
        libm::erf(self)
    }
    #[inline(always)]
    fn tanh_k(self) -> Self {
        self.tanh()
    }
    #[inline(always)]
    fn exp_k(self) -> Self {
        self.exp()
    }
    fn c(x: f64) -> Self {
        x
    }
}

/// eˣ for f32 within 2 ulps of the true value, branch-free so loops over it vectorise (libm's
/// `expf` is a call per element): e^x = 2ⁿ·e^r with n = round(x/ln 2), r = x − n·ln 2 split in
/// two constants, e^r by Cephes' degree-6 polynomial, 2ⁿ built in the exponent bits. Below
/// −87.3 (where 2ⁿ would be subnormal) the result is 0, above 88.72 infinity; NaN stays NaN.
#[inline(always)]
pub fn fast_exp(a: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer in the low mantissa bits (round to nearest even):
    // no `round` call, which without SSE4.1 is one per element.
    const SHIFT: f32 = 12_582_912.0;
    let x = a.clamp(-87.336_55, 88.722_83);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let ni = t.to_bits() as i32 - SHIFT.to_bits() as i32;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n ∈ [−126, 128]; 2ⁿ as two normal powers of two, as 2¹²⁸ is not an f32.
    let pow = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = er * pow(ni >> 1) * pow(ni - (ni >> 1));
    if a.is_nan() {
        a
    } else if a < -87.336_55 {
        0.0
    } else if a > 88.722_83 {
        f32::INFINITY
    } else {
        y
    }
}

/// erf for f32 (within 5e-7 of the true value) as a branch-free odd/even rational function on [−4, 4] (Eigen's
/// `generic_fast_erf_float` coefficients), so loops over it vectorise. NaN stays NaN.
#[inline(always)]
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
#[inline(always)]
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

mod sealed {
    /// Only the four storage types are elements (storage holds exactly these).
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A storage element (f16, bf16, f32, f64): how it converts to and from the type its kernels
/// compute in.
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + Default + bytemuck::Zeroable + 'static
{
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

/// bf16 → f32, exact: the bits moved up 16 (a shift, so loops over it vectorise).
#[inline(always)]
pub fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits(u32::from(x.to_bits()) << 16)
}

/// f32 → bf16 rounded to nearest even, NaN kept quiet: `half::bf16::from_f32`'s bits (and
/// PyTorch's), branch-free so loops over it vectorise.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> bf16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    let nan = ((b >> 16) as u16) | 0x0040;
    bf16::from_bits(if x.is_nan() { nan } else { rounded })
}

impl Element for bf16 {
    type C = f32;
    const DTYPE: DType = DType::BF16;
    // The branch-free conversions: the default slice loops over them vectorise.
    #[inline(always)]
    fn to_c(self) -> f32 {
        bf16_to_f32(self)
    }
    #[inline(always)]
    fn from_c(c: f32) -> Self {
        f32_to_bf16(c)
    }
    const WIDENS: bool = true;
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
