//! Selective checkpointing: a non-reentrant segment keeps what its policy saves and recomputes
//! the rest, with gradients bit-identical to storing everything (dropout included), matmuls
//! that were kept never recomputed (counted in GEMM FLOPs), and PyTorch's error when a policy
//! is asked of a reentrant segment.

mod common;

use common::bits;
use rewind::checkpoint::{Body, plan};
use rewind::checkpoint::{
    CheckpointMode, CheckpointPolicy, POLICY_NEEDS_NON_REENTRANT_MSG, SavePolicy, Segmentation,
    checkpoint_name, checkpoint_with_policy, run_blocks_with_policy,
};
use rewind::nn::{Module, Parameters, ResidualMlp};
use rewind::{Tensor, cpu, rng, tape};
use std::rc::Rc;

const D: usize = 16;
const H: usize = 64;
const ROWS: usize = 32;
const L: usize = 4;

/// One training step of an L-block residual MLP (every block a segment under `policy`, or
/// everything stored): gradient bits of every parameter, peak saved bytes, saved bytes when
/// the forward ended, and GEMM FLOPs of the backward (recomputation included).
struct Step {
    grads: Vec<Vec<u32>>,
    peak: usize,
    after_forward: usize,
    backward_flops: u64,
}

fn step(m: &ResidualMlp, x: &Tensor, policy: Option<&SavePolicy>) -> Step {
    tape::clear();
    for p in m.parameters() {
        p.zero_grad();
    }
    tape::reset_peak_saved_bytes();
    let seg = match policy {
        Some(_) => plan::segment(rewind::checkpoint::Plan::EveryBlock, L, None).unwrap(),
        None => Segmentation::store_all(L),
    };
    let policy = policy.cloned().unwrap_or_default();
    let y = run_blocks_with_policy(
        &m.modules(),
        x,
        &seg,
        CheckpointMode::NonReentrant,
        "blocks",
        &policy,
    )
    .unwrap();
    let loss = y.powf(2.0).unwrap().mean().unwrap();
    let after_forward = tape::saved_bytes();
    let before = cpu::gemm::flops();
    loss.backward().unwrap();
    let backward_flops = cpu::gemm::flops() - before;
    assert_eq!(tape::saved_bytes(), 0, "backward frees everything");
    Step {
        grads: m
            .parameters()
            .iter()
            .map(|p| bits(&p.grad().unwrap()))
            .collect(),
        peak: tape::peak_saved_bytes(),
        after_forward,
        backward_flops,
    }
}

fn model() -> (ResidualMlp, Tensor) {
    rng::manual_seed(7);
    let m = ResidualMlp::new(L, D, H).unwrap();
    let x = Tensor::randn(&[ROWS, D]).unwrap();
    (m, x)
}

#[test]
fn save_matmuls_keeps_only_what_backward_needs_and_recomputes_no_matmul() {
    let (m, x) = model();
    let store = step(&m, &x, None);
    let every = step(&m, &x, Some(&SavePolicy::RecomputeAll));
    let dots = step(&m, &x, Some(&SavePolicy::SaveMatmuls));
    assert_eq!(
        dots.grads, store.grads,
        "bit-identical to storing everything"
    );
    assert_eq!(every.grads, store.grads);

    let f = 4; // bytes per f32
    // Store keeps per block its input x, fc1's output h1 and gelu's output g (fc2's output
    // is only added to x, whose backward needs nothing). The first block's x is the caller's
    // (not counted) and the loss's pow keeps the last block's output: L inputs' worth.
    assert_eq!(store.after_forward, L * f * ROWS * (D + 2 * H));
    // save-matmuls keeps x and h1 (fc1's output, which gelu's backward needs); g is dropped
    // and recomputed from h1; fc2's output is needed by nobody, so it is not kept either.
    assert_eq!(dots.after_forward, L * f * ROWS * (D + H));
    // Its peak: the last block's g comes back after pow's backward freed the output it kept.
    assert_eq!(
        dots.peak,
        L * f * ROWS * (D + H) - f * ROWS * D + f * ROWS * H
    );
    // Backward GEMMs: 2 per linear (dx, dW) = 2× the forward's, for every plan; recompute-all
    // adds fc1 once per block (its rerun stops before fc2: nothing backward needs comes after
    // it), save-matmuls adds none (fc1 reused, fc2 never rerun).
    // (The first block's input needs no gradient: one dx product fewer.)
    let linear = (2 * ROWS * D * H) as u64;
    let forward = L as u64 * 2 * linear;
    assert_eq!(store.backward_flops, 2 * forward - linear);
    assert_eq!(
        every.backward_flops,
        2 * forward - linear + L as u64 * linear
    );
    assert_eq!(dots.backward_flops, 2 * forward - linear);
}

#[test]
fn at_sixteen_blocks_save_matmuls_keeps_at_most_six_tenths_of_the_stored_peak() {
    // The benchmark's shape (width : hidden = 1 : 4, L = 16), scaled down: per block store
    // keeps x, h1 and g (d + 2h per row), save-matmuls x and h1 (d + h), plus one block's g
    // while it recomputes: (16·(32 + 128) + 128) / (16·(32 + 256)) = 0.58.
    rng::manual_seed(9);
    let m = ResidualMlp::new(16, 32, 128).unwrap();
    let x = Tensor::randn(&[8, 32]).unwrap();
    let peak = |policy: &SavePolicy, seg: &Segmentation| -> (usize, Vec<Vec<u32>>) {
        tape::clear();
        for p in m.parameters() {
            p.zero_grad();
        }
        tape::reset_peak_saved_bytes();
        let y = run_blocks_with_policy(
            &m.modules(),
            &x,
            seg,
            CheckpointMode::NonReentrant,
            "b",
            policy,
        )
        .unwrap();
        y.mean().unwrap().backward().unwrap();
        let g = m
            .parameters()
            .iter()
            .map(|p| bits(&p.grad().unwrap()))
            .collect();
        (tape::peak_saved_bytes(), g)
    };
    let every = plan::segment(rewind::checkpoint::Plan::EveryBlock, 16, None).unwrap();
    let (store, g0) = peak(&SavePolicy::RecomputeAll, &Segmentation::store_all(16));
    let (dots, g1) = peak(&SavePolicy::SaveMatmuls, &every);
    assert_eq!(g0, g1);
    let ratio = dots as f64 / store as f64;
    assert!(
        ratio <= 0.60,
        "save-matmuls keeps {ratio:.3}× the stored peak"
    );
}

#[test]
fn dropout_inside_a_selective_segment_replays_its_mask_bit_for_bit() {
    rng::manual_seed(3);
    let w1 = Tensor::randn(&[H, D])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let w2 = Tensor::randn(&[D, H])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = Tensor::randn(&[ROWS, D]).unwrap();
    let (a, b) = (w1.clone(), w2.clone());
    let body: Body = Rc::new(move |xs: &[Tensor]| {
        let h = xs[0].linear(&a, None)?.gelu()?;
        let h = h.dropout(0.3, true)?;
        h.linear(&b, None)?.tanh()
    });
    let run = |policy: Option<&SavePolicy>| -> Vec<Vec<u32>> {
        w1.zero_grad();
        w2.zero_grad();
        rng::manual_seed(11);
        let y = match policy {
            None => body(std::slice::from_ref(&x)).unwrap(),
            Some(p) => {
                checkpoint_with_policy("blk", CheckpointMode::NonReentrant, &[&x], body.clone(), p)
                    .unwrap()
            }
        };
        // Draw from the generator between forward and backward: the replay must not care.
        let _ = Tensor::randn(&[5]).unwrap();
        y.sum().unwrap().backward().unwrap();
        vec![bits(&w1.grad().unwrap()), bits(&w2.grad().unwrap())]
    };
    let stored = run(None);
    assert_eq!(run(Some(&SavePolicy::SaveMatmuls)), stored);
    assert_eq!(run(Some(&SavePolicy::RecomputeAll)), stored);
}

#[test]
fn a_product_of_frozen_inputs_in_a_selective_segment_is_recomputed_not_given_a_kept_output() {
    // A LoRA layer on a frozen input: x·Wᵀ (frozen W, x needs no grad) is not recorded, so the
    // rerun must compute it rather than take the kept output of the recorded x·Aᵀ after it
    // (once: a `[rows, r]` handed where `[rows, H]` belongs).
    rng::manual_seed(5);
    let w = Tensor::randn(&[H, D]).unwrap();
    let a = Tensor::randn(&[4, D])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let bm = Tensor::randn(&[H, 4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = Tensor::randn(&[ROWS, D]).unwrap();
    let (w2, a2, b2) = (w.clone(), a.clone(), bm.clone());
    let body: Body = Rc::new(move |xs: &[Tensor]| {
        let base = xs[0].linear(&w2, None)?;
        let low = xs[0].linear(&a2, None)?.linear(&b2, None)?;
        base.add(&low)?.gelu()
    });
    let run = |policy: Option<&SavePolicy>| -> Vec<Vec<u32>> {
        a.zero_grad();
        bm.zero_grad();
        let y = match policy {
            None => body(std::slice::from_ref(&x)).unwrap(),
            Some(p) => {
                checkpoint_with_policy("lora", CheckpointMode::NonReentrant, &[&x], body.clone(), p)
                    .unwrap()
            }
        };
        y.sum().unwrap().backward().unwrap();
        vec![bits(&a.grad().unwrap()), bits(&bm.grad().unwrap())]
    };
    let stored = run(None);
    assert_eq!(run(Some(&SavePolicy::SaveMatmuls)), stored);
    assert_eq!(run(Some(&SavePolicy::RecomputeAll)), stored);
}

#[test]
fn named_tensors_are_kept_and_a_custom_policy_gets_pytorchs_four_answers() {
    let (m, x) = model();
    let store = step(&m, &x, None);
    // A body that names its hidden activation, as `jax.ad_checkpoint.checkpoint_name` does.
    let blocks = m.blocks.clone();
    let run = |policy: &SavePolicy| -> (Vec<Vec<u32>>, usize) {
        tape::clear();
        for p in m.parameters() {
            p.zero_grad();
        }
        let mut h = x.clone();
        for b in &blocks {
            let b = b.clone();
            let body: Body = Rc::new(move |xs: &[Tensor]| {
                let h1 = checkpoint_name(&b.fc1.forward(&xs[0])?, "hidden");
                let g = checkpoint_name(&h1.gelu()?, "activated");
                b.fc2.forward(&g)?.add(&xs[0])
            });
            h = checkpoint_with_policy("b", CheckpointMode::NonReentrant, &[&h], body, policy)
                .unwrap();
        }
        let loss = h.powf(2.0).unwrap().mean().unwrap();
        let saved = tape::saved_bytes();
        loss.backward().unwrap();
        let grads = m
            .parameters()
            .iter()
            .map(|p| bits(&p.grad().unwrap()))
            .collect();
        (grads, saved)
    };
    let f = 4;
    let (g, saved) = run(&SavePolicy::SaveNames(vec!["activated".into()]));
    assert_eq!(g, store.grads);
    assert_eq!(
        saved,
        L * f * ROWS * (D + H),
        "x and the named g; h1 recomputed"
    );
    let custom = SavePolicy::Custom(Rc::new(|o| match (o.op, o.name) {
        (_, Some("hidden")) => CheckpointPolicy::PreferSave,
        ("gelu", _) => CheckpointPolicy::MustRecompute,
        _ => CheckpointPolicy::PreferRecompute,
    }));
    let (g, saved) = run(&custom);
    assert_eq!(g, store.grads);
    assert_eq!(saved, L * f * ROWS * (D + H));
    let everything = SavePolicy::Custom(Rc::new(|_| CheckpointPolicy::MustSave));
    let (g, saved) = run(&everything);
    assert_eq!(g, store.grads);
    assert_eq!(saved, store.after_forward, "saving every output is storing");
}

#[test]
fn a_policy_under_reentrant_checkpointing_is_pytorchs_value_error() {
    let (m, x) = model();
    let b = m.blocks[0].clone();
    let body: Body = Rc::new(move |xs: &[Tensor]| b.forward(&xs[0]));
    let err = checkpoint_with_policy(
        "b",
        CheckpointMode::Reentrant,
        &[&x],
        body,
        &SavePolicy::SaveMatmuls,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), POLICY_NEEDS_NON_REENTRANT_MSG);
    assert_eq!(
        POLICY_NEEDS_NON_REENTRANT_MSG,
        "Passing `context_fn`, `debug`, or `respect_saved_tensors_hooks` is only supported when use_reentrant=False."
    );
}

#[test]
fn a_body_that_runs_other_ops_when_recomputed_is_a_clear_error() {
    let w = Tensor::randn(&[D, D])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = Tensor::randn(&[ROWS, D]).unwrap();
    let calls = Rc::new(std::cell::Cell::new(0));
    let (w2, c) = (w.clone(), calls.clone());
    let body: Body = Rc::new(move |xs: &[Tensor]| {
        c.set(c.get() + 1);
        let h = xs[0].linear(&w2, None)?;
        let h = if c.get() == 1 {
            h.tanh()?
        } else {
            h.sigmoid()?
        };
        h.linear(&w2, None)
    });
    let y = checkpoint_with_policy(
        "odd",
        CheckpointMode::NonReentrant,
        &[&x],
        body,
        &SavePolicy::SaveMatmuls,
    )
    .unwrap();
    let err = y.sum().unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("segment `odd`"), "{err}");
    assert!(err.contains("recomputed op 1 is sigmoid"), "{err}");
    tape::clear();
}
