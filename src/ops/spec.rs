//! What an op declares about itself, once: its name on the tape, PyTorch's name for its node,
//! how autocast treats its inputs, and whether it is a product. The dispatch point
//! (`ops/dispatch.rs`) and the tape read these; no other file lists ops.

/// How autocast treats an op's inputs (PyTorch's autocast op lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    /// Cast to the autocast dtype, computed with f32 accumulation (matmul, linear).
    Lower,
    /// Run in f32 on CUDA's list only (softmax, log_softmax, layer_norm, rms_norm, exp, log,
    /// pow, sum, mean): `autocast(F16)` widens half inputs; `autocast(BF16)`, following
    /// PyTorch's CPU list, keeps them (the kernels still accumulate in f32).
    Widen,
    /// Run in f32 on both lists (the losses: cross-entropy): the op reads half inputs as they
    /// are and computes and returns f32, the bits of widening them first without the copy.
    Fp32,
    /// Mixed dtypes promote to f32 (add, sub, mul, div, cat); equal dtypes stay.
    Promote,
    /// Inputs as given (every other op).
    Keep,
}

/// An op's declaration.
#[derive(Debug)]
pub struct OpSpec {
    /// The name on the tape (`"matmul"`), shown by [`crate::tape::dump`] and asked by policies.
    pub name: &'static str,
    /// PyTorch's name for the node it records (`"Mm"`), used in PyTorch's error texts.
    pub torch: &'static str,
    /// What autocast does to its inputs.
    pub cast: Cast,
    /// A matrix product: where a step's time goes. Selective policies that keep products
    /// ([`crate::checkpoint::SavePolicy::SaveMatmuls`]) keep these, and a recomputation skips
    /// them once it has everything backward needs.
    pub dot: bool,
}

impl OpSpec {
    /// An op named `name` on the tape and `torch` in PyTorch's texts, inputs kept as given.
    pub const fn new(name: &'static str, torch: &'static str) -> OpSpec {
        OpSpec {
            name,
            torch,
            cast: Cast::Keep,
            dot: false,
        }
    }

    /// The same op under autocast class `cast`.
    pub const fn cast(self, cast: Cast) -> OpSpec {
        OpSpec { cast, ..self }
    }

    /// The same op, marked as a matrix product.
    pub const fn dot(self) -> OpSpec {
        OpSpec { dot: true, ..self }
    }
}
