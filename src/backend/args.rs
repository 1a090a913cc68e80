//! What the kernels are told, the same for every backend: an elementwise function's
//! declaration, a product's layout, a copy's strides, a rotary turn, a loss's labels.

pub(crate) use crate::cpu::gemm::Layout;
use crate::dtype::Real;
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

/// How a rotary embedding's rows find their angles and pair their dims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turn {
    /// The row width (head dim).
    pub d: usize,
    pub heads: usize,
    pub t: usize,
    /// One position per token for every batch row (`[T]`), else one per batch row and token.
    pub per_row: bool,
    /// Pairs turned per row (the rest of the row passes through).
    pub pairs: usize,
    pub layout: RopeLayout,
}

/// `rows` rows of `width` elements, row r read at `src_at + r·src_stride` and written at
/// `dst_at + r·dst_stride` (candle's `copy2d`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copy2d {
    pub rows: usize,
    pub width: usize,
    pub src_stride: usize,
    pub src_at: usize,
    pub dst_stride: usize,
    pub dst_at: usize,
}

/// A cross-entropy's labels: one per row, `ignore` marking rows that do not count, `count`
/// the rows that do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets<'a> {
    pub labels: &'a [i64],
    pub ignore: i64,
    pub count: usize,
}

/// (outer, axis, inner): a tensor viewed around one of its dims.
pub(crate) type Split = (usize, usize, usize);

/// Which dims a rotary embedding pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dim i with dim i + r/2 (transformers' `rotate_half`: Llama, Qwen2).
    Halves,
    /// Dim 2i with dim 2i + 1 (GLM, ChatGLM3).
    Interleaved,
}
