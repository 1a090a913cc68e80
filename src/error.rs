//! The one error type of the crate. Where rewind matches PyTorch, `Display` is PyTorch's text byte for byte.

use crate::dtype::DType;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used by every fallible function in rewind.
pub type Result<T> = std::result::Result<T, Error>;

/// PyTorch's text for a second backward through a freed graph.
pub const GRAPH_FREED_MSG: &str = "Trying to backward through the graph a second time (or directly access saved tensors after they have already been freed). Saved intermediate values of the graph are freed when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the graph a second time or if you need to access saved tensors after calling backward.";
/// PyTorch's text for `backward()` on a tensor with no grad path.
pub const NO_GRAD_FN_MSG: &str =
    "element 0 of tensors does not require grad and does not have a grad_fn";
/// PyTorch's text for an implicit gradient on a non-scalar output.
pub const NON_SCALAR_MSG: &str = "grad can be implicitly created only for scalar outputs";
/// PyTorch's text for `requires_grad_(false)` on a non-leaf.
pub const NOT_LEAF_MSG: &str = "you can only change requires_grad flags of leaf variables. If you want to use a computed variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach().";

/// The hint PyTorch appends to its version-counter error.
pub const INPLACE_HINT: &str = "Hint: enable anomaly detection to find the operation that failed to compute its gradient, with torch.autograd.set_detect_anomaly(True, check_nan=False).";

/// The underlying error of an [`Error::Io`] or [`Error::Cuda`], shared so `Error` stays `Clone`.
/// Two sources are equal when they print the same.
#[derive(Debug, Clone)]
pub struct Source(pub Arc<dyn std::error::Error + Send + Sync>);

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

/// Everything that can go wrong in rewind, with the data needed to explain it. New variants
/// may be added, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that an op cannot combine.
    ShapeMismatch {
        /// The op that refused.
        op: &'static str,
        /// Left (or first) operand shape.
        lhs: Vec<usize>,
        /// Right (or second) operand shape.
        rhs: Vec<usize>,
    },
    /// Two operands of different dtypes (rewind does not promote implicitly).
    DTypeMismatch {
        /// The op that refused.
        op: &'static str,
        /// Left dtype.
        lhs: DType,
        /// Right dtype.
        rhs: DType,
    },
    /// Operands on different devices (rewind moves tensors only when asked: `to_device`).
    DeviceMismatch {
        /// The op that refused.
        op: &'static str,
        /// The first operand's device (`cpu`, `cuda:0`).
        lhs: String,
        /// The other operand's device.
        rhs: String,
    },
    /// An op the tensor's device has no kernel for.
    Unsupported {
        /// The op asked for.
        op: &'static str,
        /// The device that lacks it.
        device: String,
    },
    /// A dimension index outside `-rank..rank`.
    DimOutOfRange {
        /// The op that refused.
        op: &'static str,
        /// The dimension asked for.
        dim: isize,
        /// The tensor's rank.
        rank: usize,
    },
    /// An index (embedding row, class label, slice bound) outside its range.
    IndexOutOfRange {
        /// The op that refused.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// The size it had to stay under.
        size: usize,
    },
    /// Any other bad argument, with a sentence saying what is wrong.
    InvalidArgument {
        /// The op or function that refused.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// `backward()` on a tensor with no grad path (PyTorch's text); `explanation` says why, when known.
    NoGradFn {
        /// A longer diagnosis (which segment cut the path and how to fix it), shown by `{:#}`.
        explanation: Option<String>,
    },
    /// `backward()` without a gradient on a non-scalar output (PyTorch's text).
    NonScalarBackward,
    /// A second backward through a graph whose saved tensors were freed (PyTorch's text).
    GraphFreed,
    /// `requires_grad_(false)` on a non-leaf (PyTorch's text).
    NotALeaf,
    /// A shape whose element count does not fit in memory addresses (checked arithmetic
    /// refused it before anything was allocated).
    ShapeTooLarge {
        /// The op that refused.
        op: &'static str,
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// An allocation the allocator refused.
    OutOfMemory {
        /// The op that asked.
        op: &'static str,
        /// Bytes requested.
        bytes: usize,
    },
    /// A tensor saved for backward was changed in place after it was saved (PyTorch's
    /// version-counter error, its text byte for byte).
    ModifiedInplace {
        /// The saved tensor's PyTorch type and shape, e.g. `torch.FloatTensor [2]`.
        tensor: String,
        /// The op whose output it is (PyTorch's name, e.g. `Tanh`); `None` for a leaf.
        output_of: Option<String>,
        /// Its version now.
        version: u32,
        /// Its version when it was saved.
        expected: u32,
    },
    /// A checkpoint segment misbehaved (e.g. recomputation differs from the forward).
    Checkpoint(String),
    /// Reading or writing a file failed.
    Io {
        /// What was being done (`"save"`, `"load"`, …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: Source,
    },
    /// A CUDA library is missing, or a driver, NVRTC or cuBLAS call failed.
    Cuda {
        /// The library or call that failed (`"driver"`, `"nvrtc"`, `"cublas"`, …).
        op: &'static str,
        /// What went wrong.
        msg: String,
        /// The library's own error, when there is one.
        source: Option<Source>,
    },
}

impl Error {
    /// The longer explanation carried by [`Error::NoGradFn`], if any.
    pub fn explain(&self) -> Option<&str> {
        match self {
            Error::NoGradFn { explanation } => explanation.as_deref(),
            _ => None,
        }
    }

    /// An [`Error::InvalidArgument`] from `op` saying `msg`.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// An [`Error::Io`]: `op` on `path` failed with `source`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Source(Arc::new(source)),
        }
    }

    /// An [`Error::Cuda`] from `op`, keeping the library's error as its source.
    pub fn cuda<E: std::error::Error + Send + Sync + 'static>(op: &'static str, source: E) -> Self {
        Error::Cuda {
            op,
            msg: format!("{source:?}"),
            source: Some(Source(Arc::new(source))),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: shapes {lhs:?} and {rhs:?} are incompatible")
            }
            Error::DTypeMismatch { op, lhs, rhs } => {
                write!(
                    f,
                    "{op}: dtypes {lhs:?} and {rhs:?} differ; cast one explicitly"
                )
            }
            Error::DimOutOfRange { op, dim, rank } => write!(
                f,
                "{op}: Dimension out of range (expected to be in range of [{}, {}], but got {dim})",
                -(*rank as isize).max(1),
                (*rank as isize - 1).max(0)
            ),
            Error::IndexOutOfRange { op, index, size } => {
                write!(f, "{op}: index {index} is out of bounds for size {size}")
            }
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::NoGradFn { explanation } => {
                f.write_str(NO_GRAD_FN_MSG)?;
                if let (true, Some(e)) = (f.alternate(), explanation) {
                    write!(f, "\n\n{e}")?;
                }
                Ok(())
            }
            Error::NonScalarBackward => f.write_str(NON_SCALAR_MSG),
            Error::GraphFreed => f.write_str(GRAPH_FREED_MSG),
            Error::NotALeaf => f.write_str(NOT_LEAF_MSG),
            Error::ShapeTooLarge { op, shape } => write!(
                f,
                "{op}: shape {shape:?} has more elements than a tensor can hold (at most 2^60)"
            ),
            Error::OutOfMemory { op, bytes } => write!(
                f,
                "{op}: out of memory: the allocator refused {bytes} bytes ({:.1} GiB)",
                *bytes as f64 / (1u64 << 30) as f64
            ),
            Error::ModifiedInplace {
                tensor,
                output_of,
                version,
                expected,
            } => {
                write!(
                    f,
                    "one of the variables needed for gradient computation has been modified by an inplace operation: [{tensor}]"
                )?;
                if let Some(op) = output_of {
                    write!(f, ", which is output 0 of {op},")?;
                }
                write!(
                    f,
                    " is at version {version}; expected version {expected} instead. {INPLACE_HINT}"
                )
            }
            Error::Checkpoint(msg) => f.write_str(msg),
            Error::Io { op, path, source } => {
                write!(f, "{op}: {}: {}", path.display(), source.0)
            }
            Error::Cuda { op, msg, .. } => write!(f, "{op}: {msg}"),
            Error::DeviceMismatch { op, lhs, rhs } => write!(
                f,
                "{op}: operands on {lhs} and {rhs}; move one with to_device first"
            ),
            Error::Unsupported { op, device } => write!(
                f,
                "{op}: no {device} kernel; move the tensors to the cpu with to_device first"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. }
            | Error::Cuda {
                source: Some(source),
                ..
            } => Some(source.0.as_ref()),
            _ => None,
        }
    }
}
