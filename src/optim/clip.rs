//! `clip_grad_norm_` with PyTorch's semantics: the total L2 norm over all gradients; every
//! gradient is multiplied by min(1, max_norm / (total + 1e-6)); the total norm is returned.

use crate::error::Result;
use crate::storage::Buffer;
use crate::tensor::Tensor;

/// Clips the gradients of `params` in place to a total L2 norm of at most `max_norm`; returns
/// the norm before clipping. Parameters without a gradient are skipped.
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64) -> Result<f64> {
    clip_grad_norm_agreeing_(params, max_norm, &mut |squares| Ok(squares.iter().sum()))
}

/// [`clip_grad_norm_`] where `params` hold a shard of the gradients (ZeRO): `total` turns
/// each parameter's sum of squares (in f64, 0 without a gradient) into the sum over every
/// shard (e.g. an all-reduce), so all shards scale by the same coefficient.
pub fn clip_grad_norm_agreeing_(
    params: &[Tensor],
    max_norm: f64,
    total: &mut dyn FnMut(&[f64]) -> Result<f64>,
) -> Result<f64> {
    let squares: Vec<f64> = params
        .iter()
        .map(|p| {
            p.grad()
                .map_or(0.0, |g| g.to_vec_f64().iter().map(|x| x * x).sum::<f64>())
        })
        .collect();
    let total = total(&squares)?.sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for p in params {
            let Some(g) = p.grad() else { continue };
            let scaled = match &*g.host("clip_grad_norm")? {
                Buffer::F32(v) => Buffer::F32(v.iter().map(|x| x * coef as f32).collect()),
                Buffer::F16(v) => Buffer::F16(
                    v.iter()
                        .map(|x| half::f16::from_f32(x.to_f32() * coef as f32))
                        .collect(),
                ),
                Buffer::BF16(v) => Buffer::BF16(
                    v.iter()
                        .map(|x| half::bf16::from_f32(x.to_f32() * coef as f32))
                        .collect(),
                ),
                Buffer::F64(v) => Buffer::F64(v.iter().map(|x| x * coef).collect()),
            };
            p.set_grad(Some(Tensor::from_buffer(scaled, g.shape())?));
        }
    }
    Ok(total)
}
