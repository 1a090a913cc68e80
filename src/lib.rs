//! # rewind
//!
//! A small reverse-mode autodiff engine for studying gradient checkpointing and memory-saving
//! training, with PyTorch's requires-grad semantics.
//!
//! ```
//! use rewind::{Tensor, DType};
//!
//! // y = Σ (w·x + b)²  →  dy/dw = 2(w·x + b)·x, dy/db = 2(w·x + b)
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?;
//! let w = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], &[3])?.requires_grad_(true)?;
//! let b = Tensor::full(&[3], 1.0, DType::F32)?.requires_grad_(true)?;
//! let y = w.mul(&x)?.add(&b)?.powf(2.0)?.sum()?;
//! print!("{}", rewind::tape::dump()); // mul, add, pow, sum: what each saved
//! y.backward()?;
//! assert_eq!(w.grad().unwrap().to_vec_f32(), vec![3.0, -4.0, 42.0]);
//! assert_eq!(b.grad().unwrap().to_vec_f32(), vec![3.0, -2.0, 14.0]);
//! assert_eq!(rewind::tape::saved_bytes(), 0); // backward freed everything it saved
//! # Ok::<(), rewind::Error>(())
//! ```
//!
//! Layers, each knowing only those below it: the core ([`tensor`], [`tape`], [`autograd`],
//! [`ops`], [`cpu`]) → [`checkpoint`], [`nn`], [`optim`], [`amp`]. The `rewind` command line
//! and its tools live in a separate package (`rewind-lab`) that uses only this public API.
#![warn(missing_docs)]

pub mod amp;
pub mod atomic_file;
pub mod autograd;
mod backend;
pub mod checkpoint;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod cuts;
pub mod dtype;
pub mod error;
pub mod gradcheck;
pub mod indices;
pub mod nn;
pub mod ops;
pub mod optim;
mod overloads;
pub mod rng;
pub mod shape;
mod storage;
pub mod tape;
pub mod tensor;
pub mod warnings;
#[cfg(feature = "safetensors")]
pub mod weights;

pub use autograd::{BackwardOptions, GradReady};
pub use backend::Device;
pub use dtype::DType;
pub use error::{Error, Result};
pub use indices::Indices;
pub use ops::gelu::GeluApprox;
pub use tape::{EnableGradGuard, NoGradGuard, no_grad};
pub use tensor::Tensor;

pub(crate) use storage::{with_buffer, zip_buffers};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
