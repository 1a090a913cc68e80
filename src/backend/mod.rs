//! The kernel interface: the arithmetic an op asks of the storage its tensors live in, one
//! method per kind of kernel, as candle's `BackendStorage` separates it. Ops keep shapes,
//! recording and the composition of their backward; a backend computes. The CPU's storage
//! ([`crate::storage::Buffer`], `cpu.rs` over `crate::cpu`) implements it. Ops reach it family
//! by family: so far the elementwise functions of one tensor (neg, scalar add/mul, exp, log,
//! tanh, sigmoid, relu, sqrt, pow, GELU, SiLU), those of two with broadcasting (add, sub, mul,
//! div) and the broadcast gradients' sums, matrix products (matmul, linear), casts and
//! reductions (sum, mean, max), softmax and log_softmax, layer and RMS norm, cross-entropy,
//! each with its gradient, and the ops that move elements (narrow, cat, permute, repeated
//! heads, embedding lookups, masked fills, dropout masks, rotary embeddings) and attention
//! (the fused scores softmax, block attention's probabilities and context); the
//! other families still call `crate::cpu` directly.

mod attention;
mod cpu;

pub(crate) use attention::{Dims, KeyMask, QueryBlocks, Rows, Span, lowest};

pub(crate) use crate::cpu::gemm::Layout;
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

    /// The sum of every element (`split` `None`, a one-element result) or over the middle
    /// axis of an (outer, axis, inner) view, times `scale`; accumulated in the compute type
    /// in a fixed order.
    fn sum(&self, split: Option<Split>, scale: f64, op: &'static str) -> Result<Self>;
    /// The maximum over the middle axis of `split` and the position of its first occurrence
    /// along that axis (NaN counts as the maximum).
    fn max(&self, split: Split, op: &'static str) -> Result<(Self, Vec<usize>)>;
    /// The largest element and the positions of every element equal to it (every NaN when
    /// it is NaN).
    fn max_all(&self) -> Result<(Self, Vec<usize>)>;
    /// A sum's gradient: `self` (the reduced gradient) times `scale`, repeated back over the
    /// reduced axis (or all `n` elements).
    fn spread(&self, split: Option<Split>, n: usize, scale: f64) -> Result<Self>;
    /// A max's gradient: zeros shaped as `split` with `self[k]` at position `at[k]` along its
    /// middle axis.
    fn scatter_axis(&self, at: &[usize], split: Split, op: &'static str) -> Result<Self>;
    /// `n` zeros with `self[0] / ties.len()` at each of the `ties`.
    fn share(&self, ties: &[usize], n: usize, op: &'static str) -> Result<Self>;

    /// softmax (or log_softmax when `log`) over the middle axis of `split`.
    fn softmax(&self, split: Split, log: bool) -> Result<Self>;
    /// Their gradient from `self` (the incoming gradient) and `y` (the forward's output):
    /// y ⊙ (g − Σ g⊙y), or g − eʸ·Σ g.
    fn softmax_grad(&self, y: &Self, split: Split, log: bool) -> Result<Self>;

    /// Layer norm over rows of `d` with optional affine weight and bias `[d]`: y, the row
    /// means and the rows' 1/σ (biased variance, `eps` inside the root).
    fn layer_norm(
        &self,
        w: Option<&Self>,
        b: Option<&Self>,
        d: usize,
        eps: f64,
    ) -> Result<(Self, Self, Self)>;
    /// Its gradients dx, dw, db from `self` (the incoming gradient), the input and the saved
    /// 1/σ; dw and db are empty unless `param_grads`.
    fn layer_norm_grad(
        &self,
        x: &Self,
        rstd: &Self,
        w: Option<&Self>,
        d: usize,
        param_grads: bool,
    ) -> Result<(Self, Self, Self)>;
    /// RMS norm over rows of `d` with weight `[d]`: y and the rows' 1/√(mean(x²) + eps).
    fn rms_norm(&self, w: &Self, d: usize, eps: f64) -> Result<(Self, Self)>;
    /// Its gradients dx and dw from `self` (the incoming gradient), the input and saved r.
    fn rms_norm_grad(&self, x: &Self, rstd: &Self, w: &Self, d: usize) -> Result<(Self, Self)>;

    /// Mean cross-entropy of rows of `c` logits against `t` (a one-element result) and each
    /// row's log Σ eᶻ, exact in f64 (kept on the host: one number per row).
    fn cross_entropy(&self, c: usize, t: Targets) -> Result<(Self, Vec<f64>)>;
    /// Its gradient (softmax − onehot)·g/n from `self` (the one-element incoming gradient),
    /// the logits and their rows' log Σ eᶻ; ignored rows get zeros.
    fn cross_entropy_grad(&self, z: &Self, lse: &[f64], t: Targets) -> Result<Self>;

    /// Copies (or adds, when `add`) the block `c` describes from `self` into `dst`.
    fn copy2d(&self, dst: &mut Self, c: Copy2d, add: bool) -> Result<()>;
    /// The elements of a tensor of `shape` with its dims reordered as `dims`.
    fn permute(&self, shape: &[usize], dims: &[usize]) -> Result<Self>;
    /// Rows `ids` of `self` (rows of `d`), one after another.
    fn index_select(&self, ids: &[i64], d: usize) -> Result<Self>;
    /// `rows` × `d` zeros with row j of `self` added into row `ids[j]` (except where
    /// `ids[j]` is `skip`), in row order and the compute type.
    fn index_add(&self, ids: &[i64], rows_d: (usize, usize), skip: Option<i64>) -> Result<Self>;
    /// `self` (shape `shapes.0`) with `value` where `mask` (shape `shapes.1`, broadcast to
    /// `self`'s) is nonzero.
    fn masked_fill(&self, mask: &Self, shapes: (&[usize], &[usize]), value: f64) -> Result<Self>;
    /// A dropout mask shaped like `self`: 1/(1−p) with probability 1−p, else 0, drawn from
    /// the engine generator.
    fn dropout_mask(&self, p: f64) -> Result<Self>;

    /// Rotary embedding: each `[B, H, T, d]` row's pairs turned by (cos θ, sin θ) from
    /// `angles` (per position index, then per pair; f32 as transformers computes them).
    fn rotate(&self, angles: &[(f32, f32)], turn: Turn) -> Result<Self>;

    /// softmax(self·scale + mask) over the rows of attention scores, scale and mask rounded
    /// in the scores' dtype as the unfused ops would; f16 scores give f32 probabilities.
    fn attention_softmax(&self, rows: Rows, mask: &KeyMask, scale: f64) -> Result<Self>;
    /// Its gradient scale·y ⊙ (g − Σ g⊙y) over rows of `t`, in the scores' `dtype`.
    fn attention_softmax_grad(&self, y: &Self, t_scale: (usize, f64), dtype: DType)
    -> Result<Self>;
    /// Block attention's probabilities, packed `[B, H, P]`, from queries `self` and keys `k`.
    fn attention_probs(
        &self,
        k: &Self,
        n: Dims,
        qb: &QueryBlocks,
        mask: &KeyMask,
        scale: f64,
    ) -> Result<Self>;
    /// Their gradients dq (when `k` is given) and dk (when `q` is) from `self` (dP) and the
    /// probabilities `y`.
    fn attention_probs_grad(
        &self,
        y: &Self,
        qk: (Option<&Self>, Option<&Self>),
        n: Dims,
        qb: &QueryBlocks,
        scale: f64,
    ) -> Result<(Option<Self>, Option<Self>)>;
    /// The context `[B, Tq, H·D]` of packed probabilities `self` and values `v`.
    fn attention_context(&self, v: &Self, n: Dims, qb: &QueryBlocks) -> Result<Self>;
    /// Its gradients dP (when `v` is given) and dv (when `p` is) from `self` (the context's).
    fn attention_context_grad(
        &self,
        pv: (Option<&Self>, Option<&Self>),
        n: Dims,
        qb: &QueryBlocks,
    ) -> Result<(Option<Self>, Option<Self>)>;
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
