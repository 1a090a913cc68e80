//! Exact memory accounting: the tape's saved bytes equal a hand count of what each op saves.
//! Counted: activations (outputs of ops) kept for backward, each storage once. Not counted:
//! tensors the caller created (parameters, input batches), which exist with or without a tape.

use rewind::nn::{Linear, Module};
use rewind::{Tensor, tape};

const F32: usize = 4;

fn mlp_block(x: &Tensor, fc1: &Linear, fc2: &Linear) -> Tensor {
    fc2.forward(&fc1.forward(x).unwrap().gelu().unwrap())
        .unwrap()
        .add(x)
        .unwrap()
}

#[test]
fn saved_bytes_of_mlp_match_hand_count() {
    tape::clear();
    rewind::rng::manual_seed(0);
    let (b, d, h) = (4, 8, 16);
    let blocks: Vec<(Linear, Linear)> = (0..2)
        .map(|_| {
            (
                Linear::new(d, h, true).unwrap(),
                Linear::new(h, d, true).unwrap(),
            )
        })
        .collect();
    let x = Tensor::from_vec(vec![0.1f32; b * d], &[b, d]).unwrap();

    tape::reset_peak_saved_bytes();
    let r1 = mlp_block(&x, &blocks[0].0, &blocks[0].1);
    // Block 0: linear₁ saves x (caller's data: 0) and W₁ (parameter: 0); gelu saves its
    // input h₁ [b,h]; linear₂ saves gelu's output [b,h] and W₂ (0); the residual add saves
    // nothing.
    let block0 = 2 * b * h * F32;
    assert_eq!(tape::saved_bytes(), block0);
    let r2 = mlp_block(&r1, &blocks[1].0, &blocks[1].1);
    // Block 1 also saves its input r₁ [b,d] (an activation now) in linear₁.
    let block1 = b * d * F32 + 2 * b * h * F32;
    assert_eq!(tape::saved_bytes(), block0 + block1);
    let loss = r2.mean().unwrap();
    assert_eq!(tape::saved_bytes(), block0 + block1, "mean saves nothing");

    let per_entry: Vec<(&str, usize)> = tape::entries()
        .iter()
        .map(|e| (e.op, e.saved_bytes))
        .collect();
    assert_eq!(
        per_entry,
        vec![
            ("linear", 0),
            ("gelu", b * h * F32),
            ("linear", b * h * F32),
            ("add", 0),
            ("linear", b * d * F32),
            ("gelu", b * h * F32),
            ("linear", b * h * F32),
            ("add", 0),
            ("mean", 0),
        ]
    );

    loss.backward().unwrap();
    assert_eq!(tape::saved_bytes(), 0, "backward frees everything it saved");
    assert_eq!(tape::peak_saved_bytes(), block0 + block1);
}

#[test]
fn a_storage_saved_by_two_entries_counts_once() {
    tape::clear();
    let w = Tensor::from_vec(vec![0.5f32; 8], &[8])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let y = w.tanh().unwrap(); // saves y
    let z = y.mul(&y).unwrap(); // saves y twice (each operand for the other's gradient)
    assert_eq!(
        tape::entries()[1].saved_bytes,
        2 * 8 * F32,
        "per entry: what the op holds"
    );
    assert_eq!(
        tape::saved_bytes(),
        8 * F32,
        "in total: one storage, counted once"
    );
    z.sum().unwrap().backward().unwrap();
    assert_eq!(tape::saved_bytes(), 0);
}

#[test]
fn frozen_weights_need_no_saved_input() {
    // With W frozen and x data, linear records nothing; with x requiring grad but W frozen,
    // linear saves W (caller's: 0 bytes) and not x: dW is never computed.
    tape::clear();
    let w = Tensor::from_vec(vec![0.1f32; 12], &[3, 4]).unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 8], &[2, 4]).unwrap();
    let y = x.linear(&w, None).unwrap();
    assert!(!y.requires_grad());
    assert!(tape::entries().is_empty());
    let h = x.tanh().unwrap().requires_grad_(true).unwrap();
    let y = h.linear(&w, None).unwrap();
    assert_eq!(tape::entries().last().unwrap().saved_bytes, 0);
    y.sum().unwrap().backward().unwrap();
    assert!(h.grad().is_some() && w.grad().is_none());
}

#[test]
fn retain_graph_keeps_saved_bytes_until_the_last_backward() {
    tape::clear();
    let w = Tensor::from_vec(vec![0.5f32; 4], &[4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let loss = w.exp().unwrap().sum().unwrap();
    loss.backward_with(
        None,
        rewind::BackwardOptions {
            retain_graph: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(tape::saved_bytes(), 4 * F32);
    loss.backward().unwrap();
    assert_eq!(tape::saved_bytes(), 0);
}

#[test]
fn index_state_an_op_keeps_counts_as_saved_bytes() {
    // embedding keeps its token ids (i64) to scatter dW; max_dim keeps the argmax positions
    // (usize); cross_entropy keeps its labels (i64) and each row's log-sum-exp (f64) beside the
    // logits. None is a tensor, all are memory the tape holds until backward.
    tape::clear();
    let w = Tensor::from_vec(vec![0.5f32; 10 * 4], &[10, 4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let ids = rewind::Indices::from_slice(&[1, 3, 3, 7, 0, 9]);
    let e = w.embedding(&ids).unwrap();
    assert_eq!(tape::saved_bytes(), 6 * 8, "six i64 ids");
    let (m, _) = e.max_dim(1, false).unwrap();
    assert_eq!(tape::saved_bytes(), 6 * 8 + 6 * size_of::<usize>());
    let labels = rewind::Indices::from_slice(&[0, 1, 2, 3, 0, 1]);
    let loss = e.cross_entropy(&labels, -100).unwrap();
    // cross_entropy also saves the logits [6, 4] f32 (the embedding's output, an activation)
    // and six f64 row log-sum-exps.
    assert_eq!(
        tape::saved_bytes(),
        6 * 8 + 6 * size_of::<usize>() + 6 * 4 * F32 + 6 * 8 + 6 * 8
    );
    loss.add(&m.sum().unwrap()).unwrap().backward().unwrap();
    assert_eq!(tape::saved_bytes(), 0, "backward released all of it");
}

#[test]
fn a_scratch_forward_leaves_nothing_on_the_tape() {
    // tape::scratch runs a forward that is measured but never backwarded (the planner's probe):
    // what it recorded is freed when it returns, and its outputs cannot be backwarded.
    tape::clear();
    let w = Tensor::from_vec(vec![0.5f32; 64], &[8, 8])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 32], &[4, 8]).unwrap();
    let (inside, y) = tape::scratch(|| {
        let y = x.matmul(&w).unwrap().tanh().unwrap().sum().unwrap();
        (tape::saved_bytes(), y)
    });
    assert_eq!(
        inside,
        4 * 8 * F32,
        "tanh saved its output while the scope ran"
    );
    assert_eq!(tape::saved_bytes(), 0);
    assert!(tape::entries().is_empty());
    assert_eq!(y.backward().unwrap_err(), rewind::Error::GraphFreed);
}
