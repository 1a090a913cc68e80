//! 8-bit quantization for the optimizer's states, in three layers, each using only those
//! before it: the code maps and their search (`codes`), their lookup-free arithmetic form
//! (`arith`), and the quantizer that picks the fastest form for whole slices (`map`).

pub(crate) mod arith;
pub mod codes;
mod map;

pub use codes::{CODES, CodeMap, dynamic_map};
pub use map::QuantMap;
