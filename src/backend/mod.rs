//! The kernel interface: the arithmetic an op asks of the storage its tensors live in, one
//! method per kind of kernel, as candle's `BackendStorage` separates it. Ops keep shapes,
//! recording and the composition of their backward; a backend computes. The CPU's storage
//! ([`crate::storage::Buffer`], `cpu.rs` over `crate::cpu`) implements it. Ops reach it family
//! by family: so far the elementwise functions of one tensor (neg, scalar add/mul, exp, log,
//! tanh, sigmoid, relu, sqrt, pow, GELU, SiLU), those of two with broadcasting (add, sub, mul,
//! div) and the broadcast gradients' sums, matrix products (matmul, linear) and casts; the
//! other families still call `crate::cpu` directly.

mod cpu;

use crate::cpu::gemm::Layout;
use crate::dtype::{DType, Real};
use crate::error::Result;
use crate::ops::spec::OpSpec;

/// What an elementwise op keeps for its derivative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saves {
    Nothing,
    Input,
    Output,
}

/// An elementwise function with its derivative, named by its declaration (a device backend
/// finds its kernel by `SPEC.name`). `df` receives the input `x` when `SAVES` is `Input` and
/// the output `y` when it is `Output` (the other argument is zero).
pub(crate) trait Unary: Copy + Send + Sync + 'static {
    const SPEC: &'static OpSpec;
    const SAVES: Saves;
    fn f<T: Real>(self, x: T) -> T;
    fn df<T: Real>(self, x: T, y: T) -> T;
}

/// An elementwise arithmetic operation of two tensors (with NumPy broadcasting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// One matrix product `C = A·B` (m×k times k×n), each operand stored as its layout says,
/// repeated over `batch` with A or B shared by every product when flagged, the products
/// summed into one C when `c_shared` (a shared operand's gradient).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Product {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub la: Layout,
    pub lb: Layout,
    pub a_shared: bool,
    pub b_shared: bool,
    pub c_shared: bool,
}

impl Product {
    /// One unbatched product.
    pub(crate) fn single((m, k, n): (usize, usize, usize), la: Layout, lb: Layout) -> Product {
        Product {
            batch: 1,
            m,
            k,
            n,
            la,
            lb,
            a_shared: false,
            b_shared: false,
            c_shared: false,
        }
    }
}

/// The arithmetic a backend's storage provides. Every method returns new storage of the
/// same backend; operands of different dtypes are `Error::DTypeMismatch` naming `op`.
pub(crate) trait BackendStorage: Sized {
    /// The elements converted to `dtype` (round to nearest even).
    fn to_dtype(&self, dtype: DType) -> Result<Self>;
    /// `op.f` of every element.
    fn unary<U: Unary>(&self, op: U) -> Result<Self>;
    /// The gradient of an elementwise op: `self` (the incoming gradient) times `op.df` at
    /// `saved` (the input or output, as `U::SAVES` says; `None` when it saves nothing).
    fn unary_grad<U: Unary>(&self, saved: Option<&Self>, op: U) -> Result<Self>;
    /// `self ∘ rhs` for shapes `a` and `b` broadcast to `out` (`op` names the caller).
    fn binary(
        &self,
        rhs: &Self,
        kind: BinaryOp,
        shapes: (&[usize], &[usize], &[usize]),
        op: &'static str,
    ) -> Result<Self>;
    /// `self` (shape `from`) summed over the dims broadcasting added or stretched, to `to`.
    fn sum_to(&self, from: &[usize], to: &[usize]) -> Result<Self>;
    /// `self · rhs` as `p` describes.
    fn product(&self, rhs: &Self, p: Product, op: &'static str) -> Result<Self>;
    /// `self · wᵀ + bias` for `self` rows × din and `w` dout × din (PyTorch's `F.linear`).
    fn linear(&self, w: &Self, bias: Option<&Self>, dims: (usize, usize, usize)) -> Result<Self>;
}
