//! Helpers shared by the integration tests of both packages (the lab's tests include this file
//! too): tensors from literals, seeded random tensors, gradient bits, the every-block plan.
#![allow(dead_code)] // each test file uses a different subset

use rewind::Tensor;
use rewind::checkpoint::{Plan, Segmentation, plan};

/// An f32 tensor of `shape` holding `v`.
pub fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

/// An f32 leaf of `shape` holding `v` that requires grad.
pub fn param(v: &[f32], shape: &[usize]) -> Tensor {
    t(v, shape).requires_grad_(true).unwrap()
}

/// Seeded standard-normal f32 values times `scale`.
pub fn randn(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    rewind::rng::manual_seed(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = rewind::rng::normal_vec(n)
        .into_iter()
        .map(|v| (v * scale) as f32)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// Seeded f64 values, uniform in [lo, hi).
pub fn uniform_f64(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    rewind::rng::manual_seed(seed);
    let n = shape.iter().product();
    let v: Vec<f64> = rewind::rng::uniform_vec(n)
        .into_iter()
        .map(|u| lo + (hi - lo) * u)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// The bits of every element of `t`, for bit-for-bit comparisons.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().iter().map(|v| v.to_bits()).collect()
}

/// Every block its own checkpoint segment.
pub fn every(n: usize) -> Segmentation {
    plan::segment(Plan::EveryBlock, n, None).unwrap()
}

/// A JSON array of numbers as f32 (fixtures written by the reference scripts).
pub fn json_floats(v: &serde_json::Value) -> Vec<f32> {
    json_numbers(v).into_iter().map(|x| x as f32).collect()
}

/// A JSON array of numbers as f64.
pub fn json_numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}
