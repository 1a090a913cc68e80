//! The kernel interface: the arithmetic an op asks of the storage its tensors live in, one
//! method per kind of kernel, as candle's `BackendStorage` separates it. Ops keep shapes,
//! recording and the composition of their backward; a backend computes. The CPU's storage
//! ([`crate::storage::Buffer`], `cpu.rs` over `crate::cpu`) implements every method; a device
//! backend (`crate::cuda::CudaBuffer`, feature `cuda`) implements what its kernels cover and
//! refuses the rest by name. [`Data`] is a tensor's storage tagged by device: it runs the
//! backend its operands share.

mod args;
mod attention;
mod cpu;
mod data;

pub use args::RopeLayout;
pub(crate) use args::{BinaryOp, Copy2d, Layout, Product, Saves, Split, Targets, Turn, Unary};
pub(crate) use attention::{Dims, KeyMask, QueryBlocks, Rows, Span, lowest};
pub(crate) use data::Data;
pub use data::Device;
#[cfg(feature = "cuda")]
pub(crate) use data::Side;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The arithmetic a backend's storage provides. Every method returns new storage of the
/// same backend; operands of different dtypes are `Error::DTypeMismatch` naming `op`. A
/// backend implements what it can: the default bodies refuse with `Error::Unsupported`
/// naming the op and the device (the CPU implements every method).
#[allow(unused_variables)] // the default bodies refuse without reading their arguments
pub(crate) trait BackendStorage: Sized {
    /// The device, as users name it (`cpu`, `cuda:0`): in the error of an op it lacks.
    fn device_name(&self) -> String;
    /// The error of an op this backend does not implement.
    fn unsupported(&self, op: &'static str) -> Error {
        Error::Unsupported {
            op,
            device: self.device_name(),
        }
    }
    /// `n` zeros of `dtype` on this storage's device.
    fn zeros(&self, dtype: DType, n: usize, op: &'static str) -> Result<Self> {
        Err(self.unsupported(op))
    }
    /// The elements converted to `dtype` (round to nearest even).
    fn to_dtype(&self, dtype: DType) -> Result<Self>;
    /// `op.f` of every element.
    fn unary<U: Unary>(&self, op: U) -> Result<Self> {
        Err(self.unsupported(U::SPEC.name))
    }
    /// The gradient of an elementwise op: `self` (the incoming gradient) times `op.df` at
    /// `saved` (the input or output, as `U::SAVES` says; `None` when it saves nothing).
    fn unary_grad<U: Unary>(&self, saved: Option<&Self>, op: U) -> Result<Self> {
        Err(self.unsupported(U::SPEC.name))
    }
    /// `self ∘ rhs` for shapes `a` and `b` broadcast to `out` (`op` names the caller).
    fn binary(
        &self,
        rhs: &Self,
        kind: BinaryOp,
        shapes: (&[usize], &[usize], &[usize]),
        op: &'static str,
    ) -> Result<Self> {
        Err(self.unsupported(op))
    }
    /// `self` (shape `from`) summed over the dims broadcasting added or stretched, to `to`.
    fn sum_to(&self, from: &[usize], to: &[usize]) -> Result<Self> {
        Err(self.unsupported("sum_to"))
    }
    /// `self · rhs` as `p` describes.
    fn product(&self, rhs: &Self, p: Product, op: &'static str) -> Result<Self> {
        Err(self.unsupported(op))
    }
    /// `self · wᵀ + bias` for `self` rows × din and `w` dout × din (PyTorch's `F.linear`).
    fn linear(&self, w: &Self, bias: Option<&Self>, dims: (usize, usize, usize)) -> Result<Self> {
        Err(self.unsupported("linear"))
    }

    /// The sum of every element (`split` `None`, a one-element result) or over the middle
    /// axis of an (outer, axis, inner) view, times `scale`; accumulated in the compute type
    /// in a fixed order.
    fn sum(&self, split: Option<Split>, scale: f64, op: &'static str) -> Result<Self> {
        Err(self.unsupported(op))
    }
    /// The maximum over the middle axis of `split` and the position of its first occurrence
    /// along that axis (NaN counts as the maximum).
    fn max(&self, split: Split, op: &'static str) -> Result<(Self, Vec<usize>)> {
        Err(self.unsupported(op))
    }
    /// The largest element and the positions of every element equal to it (every NaN when
    /// it is NaN).
    fn max_all(&self) -> Result<(Self, Vec<usize>)> {
        Err(self.unsupported("max_all"))
    }
    /// A sum's gradient: `self` (the reduced gradient) times `scale`, repeated back over the
    /// reduced axis (or all `n` elements).
    fn spread(&self, split: Option<Split>, n: usize, scale: f64) -> Result<Self> {
        Err(self.unsupported("spread"))
    }
    /// A max's gradient: zeros shaped as `split` with `self[k]` at position `at[k]` along its
    /// middle axis.
    fn scatter_axis(&self, at: &[usize], split: Split, op: &'static str) -> Result<Self> {
        Err(self.unsupported(op))
    }
    /// `n` zeros with `self[0] / ties.len()` at each of the `ties`.
    fn share(&self, ties: &[usize], n: usize, op: &'static str) -> Result<Self> {
        Err(self.unsupported(op))
    }

    /// softmax (or log_softmax when `log`) over the middle axis of `split`.
    fn softmax(&self, split: Split, log: bool) -> Result<Self> {
        Err(self.unsupported("softmax"))
    }
    /// Their gradient from `self` (the incoming gradient) and `y` (the forward's output):
    /// y ⊙ (g − Σ g⊙y), or g − eʸ·Σ g.
    fn softmax_grad(&self, y: &Self, split: Split, log: bool) -> Result<Self> {
        Err(self.unsupported("softmax_grad"))
    }

    /// Layer norm over rows of `d` with optional affine weight and bias `[d]`: y, the row
    /// means and the rows' 1/σ (biased variance, `eps` inside the root).
    fn layer_norm(
        &self,
        w: Option<&Self>,
        b: Option<&Self>,
        d: usize,
        eps: f64,
    ) -> Result<(Self, Self, Self)> {
        Err(self.unsupported("layer_norm"))
    }
    /// Its gradients dx, dw, db from `self` (the incoming gradient), the input and the saved
    /// 1/σ; dw and db are empty unless `param_grads`.
    fn layer_norm_grad(
        &self,
        x: &Self,
        rstd: &Self,
        w: Option<&Self>,
        d: usize,
        param_grads: bool,
    ) -> Result<(Self, Self, Self)> {
        Err(self.unsupported("layer_norm_grad"))
    }
    /// RMS norm over rows of `d` with weight `[d]`: y and the rows' 1/√(mean(x²) + eps).
    fn rms_norm(&self, w: &Self, d: usize, eps: f64) -> Result<(Self, Self)> {
        Err(self.unsupported("rms_norm"))
    }
    /// Its gradients dx and dw from `self` (the incoming gradient), the input and saved r.
    fn rms_norm_grad(&self, x: &Self, rstd: &Self, w: &Self, d: usize) -> Result<(Self, Self)> {
        Err(self.unsupported("rms_norm_grad"))
    }

    /// Mean cross-entropy of rows of `c` logits against `t` (a one-element result in dtype
    /// `out`: the logits' own, or f32 for f16 and bf16 logits, computed as if they were widened
    /// first) and each row's log Σ eᶻ, exact in f64 (kept on the host: one number per row).
    fn cross_entropy(&self, c: usize, t: Targets, out: DType) -> Result<(Self, Vec<f64>)> {
        Err(self.unsupported("cross_entropy"))
    }
    /// Its gradient (softmax − onehot)·g/n, in the logits' dtype, from `self` (the one-element
    /// incoming gradient, in the loss's dtype), the logits and their rows' log Σ eᶻ; ignored
    /// rows get zeros.
    fn cross_entropy_grad(&self, z: &Self, lse: &[f64], t: Targets) -> Result<Self> {
        Err(self.unsupported("cross_entropy_grad"))
    }
    /// The same gradient written over the logits `z` (backward's last use of them); by default
    /// through [`BackendStorage::cross_entropy_grad`], `z` untouched on an error.
    fn cross_entropy_grad_in_place(&self, z: &mut Self, lse: &[f64], t: Targets) -> Result<()> {
        *z = self.cross_entropy_grad(z, lse, t)?;
        Ok(())
    }

    /// Copies (or adds, when `add`) the block `c` describes from `self` into `dst`.
    fn copy2d(&self, dst: &mut Self, c: Copy2d, add: bool) -> Result<()> {
        Err(self.unsupported("copy2d"))
    }
    /// The elements of a tensor of `shape` with its dims reordered as `dims`.
    fn permute(&self, shape: &[usize], dims: &[usize]) -> Result<Self> {
        Err(self.unsupported("permute"))
    }
    /// Rows `ids` of `self` (rows of `d`), one after another.
    fn index_select(&self, ids: &[i64], d: usize) -> Result<Self> {
        Err(self.unsupported("index_select"))
    }
    /// `rows` × `d` zeros with row j of `self` added into row `ids[j]` (except where
    /// `ids[j]` is `skip`), in row order and the compute type.
    fn index_add(&self, ids: &[i64], rows_d: (usize, usize), skip: Option<i64>) -> Result<Self> {
        Err(self.unsupported("index_add"))
    }
    /// `self` (shape `shapes.0`) with `value` where `mask` (shape `shapes.1`, broadcast to
    /// `self`'s) is nonzero.
    fn masked_fill(&self, mask: &Self, shapes: (&[usize], &[usize]), value: f64) -> Result<Self> {
        Err(self.unsupported("masked_fill"))
    }
    /// A dropout mask shaped like `self`: 1/(1−p) with probability 1−p, else 0, drawn from
    /// the engine generator.
    fn dropout_mask(&self, p: f64) -> Result<Self> {
        Err(self.unsupported("dropout_mask"))
    }

    /// Rotary embedding: each `[B, H, T, d]` row's pairs turned by (cos θ, sin θ) from
    /// `angles` (per position index, then per pair; f32 as transformers computes them).
    fn rotate(&self, angles: &[(f32, f32)], turn: Turn) -> Result<Self> {
        Err(self.unsupported("rotate"))
    }

    /// softmax(self·scale + mask) over the rows of attention scores, scale and mask rounded
    /// in the scores' dtype as the unfused ops would; f16 scores give f32 probabilities.
    fn attention_softmax(&self, rows: Rows, mask: &KeyMask, scale: f64) -> Result<Self> {
        Err(self.unsupported("attention_softmax"))
    }
    /// Its gradient scale·y ⊙ (g − Σ g⊙y) over rows of `t`, in the scores' `dtype`.
    fn attention_softmax_grad(
        &self,
        y: &Self,
        t_scale: (usize, f64),
        dtype: DType,
    ) -> Result<Self> {
        Err(self.unsupported("attention_softmax_grad"))
    }
    /// Block attention's probabilities, packed `[B, H, P]`, from queries `self` and keys `k`.
    fn attention_probs(
        &self,
        k: &Self,
        n: Dims,
        qb: &QueryBlocks,
        mask: &KeyMask,
        scale: f64,
    ) -> Result<Self> {
        Err(self.unsupported("attention_probs"))
    }
    /// Their gradients dq (when `k` is given) and dk (when `q` is) from `self` (dP) and the
    /// probabilities `y`.
    fn attention_probs_grad(
        &self,
        y: &Self,
        qk: (Option<&Self>, Option<&Self>),
        n: Dims,
        qb: &QueryBlocks,
        scale: f64,
    ) -> Result<(Option<Self>, Option<Self>)> {
        Err(self.unsupported("attention_probs_grad"))
    }
    /// The context `[B, Tq, H·D]` of packed probabilities `self` and values `v`.
    fn attention_context(&self, v: &Self, n: Dims, qb: &QueryBlocks) -> Result<Self> {
        Err(self.unsupported("attention_context"))
    }
    /// Its gradients dP (when `v` is given) and dv (when `p` is) from `self` (the context's).
    fn attention_context_grad(
        &self,
        pv: (Option<&Self>, Option<&Self>),
        n: Dims,
        qb: &QueryBlocks,
    ) -> Result<(Option<Self>, Option<Self>)> {
        Err(self.unsupported("attention_context_grad"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that implements nothing but its name and casts.
    struct Nowhere;

    impl BackendStorage for Nowhere {
        fn device_name(&self) -> String {
            "nowhere:0".into()
        }
        fn to_dtype(&self, _dtype: DType) -> Result<Nowhere> {
            Ok(Nowhere)
        }
    }

    #[test]
    fn a_backend_refuses_the_ops_it_lacks_naming_the_op_and_its_device() {
        let refused = |r: Result<Nowhere>, op: &'static str| {
            let e = r.err().expect("the default body refuses");
            assert_eq!(
                e,
                Error::Unsupported {
                    op,
                    device: "nowhere:0".into()
                }
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "{op}: no nowhere:0 kernel; move the tensors to the cpu with to_device first"
                )
            );
        };
        refused(Nowhere.softmax((1, 4, 1), false), "softmax");
        refused(
            Nowhere.product(
                &Nowhere,
                Product::single((2, 3, 4), Layout::Normal, Layout::Normal),
                "matmul",
            ),
            "matmul",
        );
        refused(Nowhere.zeros(DType::F32, 3, "cat"), "cat");
        assert!(
            Nowhere.to_dtype(DType::F16).is_ok(),
            "what it implements runs"
        );
    }
}
