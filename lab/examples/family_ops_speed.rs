//! The Llama family's own ops at a 125M Llama's shapes (batch 8 × 256, hidden 768, 12 query
//! heads over 4 KV heads of 64, intermediate 2048), forward + backward with a given output
//! gradient, median of REPS: RMSNorm, rotary embedding of q and of k, SiLU, and grouped-query
//! causal attention with a key-padding mask. Prints one JSON line, read by
//! `scripts/family_ops_speed.py`, which times transformers' own code on the same shapes.
//! Usage: `family_ops_speed [REPS [OP]]` (OP: time only that one, for a profile).
use rewind::autograd::BackwardOptions;
use rewind::indices::Indices;
use rewind::nn::attention::causal_attention;
use rewind::ops::rope::{Rope, RopeLayout};
use rewind::{Tensor, rng};
use std::time::Instant;

// The allocator the `rewind` binary uses, set up as it sets it up.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const B: usize = 8;
const T: usize = 256;
const D: usize = 768;
const H: usize = 12;
const KV: usize = 4;
const HD: usize = 64;
const I: usize = 2048;

fn leaf(shape: &[usize]) -> rewind::Result<Tensor> {
    Tensor::randn(shape)?.requires_grad_(true)
}

/// Median seconds of `f` (forward) then backward with a random output gradient.
fn time(reps: usize, f: &dyn Fn() -> rewind::Result<Tensor>) -> rewind::Result<f64> {
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps + 1 {
        let start = Instant::now();
        let y = f()?;
        let g = Tensor::ones(y.shape(), y.dtype())?;
        y.backward_with(Some(&g), BackwardOptions::default())?;
        secs.push(start.elapsed().as_secs_f64());
    }
    secs.remove(0); // warm-up
    secs.sort_by(f64::total_cmp);
    Ok(secs[secs.len() / 2])
}

fn main() -> rewind::Result<()> {
    rewind_lab::alloc_counter::keep_freed_memory();
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    rng::manual_seed(0);
    let x = leaf(&[B, T, D])?;
    let w = leaf(&[D])?;
    let q = leaf(&[B, H, T, HD])?;
    let k = leaf(&[B, KV, T, HD])?;
    let v = leaf(&[B, KV, T, HD])?;
    let gate = leaf(&[B, T, I])?;
    let rope = Rope::new(10000.0, HD, RopeLayout::Halves)?;
    let positions = Indices::new((0..T as i64).collect(), &[T])?;
    // One row left-padded by 16, as a padded batch has.
    let mask: Vec<f32> = (0..B * T)
        .map(|e| if e / T == 0 && e % T < 16 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, &[B, 1, 1, T])?;
    let ops: [(&str, &dyn Fn() -> rewind::Result<Tensor>); 5] = [
        ("rms_norm", &|| x.rms_norm(&w, 1e-6)),
        ("rope_q", &|| q.rope(&rope, &positions)),
        ("rope_k", &|| k.rope(&rope, &positions)),
        ("silu", &|| gate.silu()),
        ("gqa_attention", &|| {
            causal_attention(&q, &k, &v, Some(&mask))
        }),
    ];
    let only = std::env::args().nth(2);
    let mut out = serde_json::Map::new();
    for (name, f) in ops {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        out.insert(name.into(), time(reps, f)?.into());
    }
    out.insert("threads".into(), rewind::cpu::threads().into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
