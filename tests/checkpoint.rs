//! Checkpoint segments on the residual MLP: bit-identical gradients for every plan and mode,
//! nesting, exact memory, recompute checks. The story on the repro model (PyTorch's reentrant
//! failure and its fixes) is tested in `lab/tests/checkpoint_story.rs`.

use rewind::checkpoint::{BlockCosts, CheckpointMode, Plan, Segmentation, checkpoint, plan};
use rewind::nn::{Parameters, ResidualMlp};
use rewind::{Error, Tensor, tape};
use std::rc::Rc;

const MODE_R: CheckpointMode = CheckpointMode::Reentrant;
const MODE_NR: CheckpointMode = CheckpointMode::NonReentrant;

mod common;
use common::every;

fn mlp_grads(
    m: &ResidualMlp,
    x: &Tensor,
    seg: &Segmentation,
    mode: CheckpointMode,
) -> Vec<Vec<u32>> {
    for p in m.parameters() {
        p.zero_grad();
    }
    let y = rewind::checkpoint::run_blocks(&m.modules(), x, seg, mode, "blocks").unwrap();
    y.mean().unwrap().backward().unwrap();
    m.parameters()
        .iter()
        .map(|p| {
            p.grad()
                .unwrap()
                .to_vec_f32()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

/// A seeded `[rows, d]` input that requires grad (so segment inputs carry gradients too).
fn input(rows: usize, d: usize) -> Tensor {
    let v: Vec<f32> = rewind::rng::normal_vec(rows * d)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    Tensor::from_vec(v, &[rows, d])
        .unwrap()
        .requires_grad_(true)
        .unwrap()
}

#[test]
fn checkpointed_grads_are_bit_identical_to_stored() {
    rewind::rng::manual_seed(3);
    let mlp = ResidualMlp::new(9, 16, 32).unwrap();
    let x = input(8, 16);
    let costs = BlockCosts::measure(&mlp.modules(), &x).unwrap();
    let store = mlp_grads(&mlp, &x, &Segmentation::store_all(9), MODE_NR);
    let full = Segmentation::store_all(9).predicted_peak(&costs);
    for p in [
        Plan::EveryBlock,
        Plan::EveryK(2),
        Plan::EveryK(4),
        Plan::Sequential(2),
        Plan::Sequential(4),
        Plan::Sqrt,
        Plan::Budget(full / 2),
        Plan::Budget(full / 4),
    ] {
        let seg = plan::segment(p, 9, Some(&costs)).unwrap();
        for mode in [MODE_R, MODE_NR] {
            assert_eq!(
                mlp_grads(&mlp, &x, &seg, mode),
                store,
                "{p:?} {mode:?} ({})",
                seg.describe()
            );
        }
    }
}

#[test]
fn nested_segments_recompute_correctly() {
    rewind::rng::manual_seed(5);
    let mlp = ResidualMlp::new(4, 8, 16).unwrap();
    let x = input(4, 8);
    let store = mlp_grads(&mlp, &x, &Segmentation::store_all(4), MODE_NR);
    let mods = mlp.modules();
    for mode in [MODE_R, MODE_NR] {
        for p in mlp.parameters() {
            p.zero_grad();
        }
        let inner = mods.clone();
        // An outer segment over all four blocks whose body checkpoints each pair.
        let body: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| {
            let seg = plan::segment(Plan::EveryK(2), 4, None)?;
            rewind::checkpoint::run_blocks(&inner, &xs[0], &seg, mode, "inner")
        });
        let y = checkpoint("outer", mode, &[&x], body).unwrap();
        y.mean().unwrap().backward().unwrap();
        let got: Vec<Vec<u32>> = mlp
            .parameters()
            .iter()
            .map(|p| {
                p.grad()
                    .unwrap()
                    .to_vec_f32()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect();
        assert_eq!(got, store, "{mode:?}");
        assert_eq!(tape::saved_bytes(), 0);
    }
}

#[test]
fn checkpoint_every_block_saves_only_block_inputs() {
    // Store: each block saves its input (but block 0's input is the caller's), gelu's input and
    // fc2's input. Every block: each segment saves only its input.
    let (rows, d, h, n) = (8, 16, 32, 4);
    rewind::rng::manual_seed(1);
    let mlp = ResidualMlp::new(n, d, h).unwrap();
    let x = Tensor::from_vec(vec![0.5f32; rows * d], &[rows, d]).unwrap();
    tape::clear();
    let y = rewind::checkpoint::run_blocks(
        &mlp.modules(),
        &x,
        &Segmentation::store_all(n),
        MODE_NR,
        "b",
    )
    .unwrap();
    assert_eq!(
        tape::saved_bytes(),
        4 * (n * 2 * rows * h + (n - 1) * rows * d)
    );
    drop(y);
    tape::clear();
    tape::reset_peak_saved_bytes();
    let y = rewind::checkpoint::run_blocks(&mlp.modules(), &x, &every(n), MODE_NR, "b").unwrap();
    assert_eq!(
        tape::saved_bytes(),
        4 * (n - 1) * rows * d,
        "block 0's input is the caller's"
    );
    assert_eq!(
        tape::peak_saved_bytes(),
        tape::saved_bytes(),
        "the forward never held a block's activations"
    );
    y.mean().unwrap().backward().unwrap();
    // During backward one block at a time is recomputed: the held inputs plus one block.
    assert_eq!(
        tape::peak_saved_bytes(),
        4 * ((n - 1) * rows * d + 2 * rows * h)
    );
    assert_eq!(tape::saved_bytes(), 0, "nothing saved is left behind");
    assert_eq!(tape::live_entries(), 0);
}

/// `x·w` then, on the call numbers `tanh_on` picks, `tanh` (the values PyTorch 2.15 gives for
/// these bodies are in each test; x = tanh(1) is an activation, w = 0.5 a parameter).
fn flaky(tanh_on: fn(u32) -> bool, reshape_on_rerun: bool) -> (Tensor, Tensor) {
    let w = Tensor::from_vec(vec![0.5f32; 4], &[4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 4], &[4])
        .unwrap()
        .tanh()
        .unwrap();
    let calls = Rc::new(std::cell::Cell::new(0));
    let (w2, c2) = (w.clone(), calls.clone());
    let body: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| {
        c2.set(c2.get() + 1);
        let y = xs[0].mul(&w2)?;
        match (tanh_on(c2.get()), reshape_on_rerun && c2.get() > 1) {
            (true, true) => y.reshape(&[2, 2])?.tanh()?.reshape(&[4]),
            (true, false) => y.tanh(),
            (false, _) => Ok(y),
        }
    });
    (checkpoint("flaky", MODE_NR, &[&x], body).unwrap(), w)
}

#[test]
fn a_rerun_that_saves_more_stops_early_and_uses_the_forward_graph() {
    // Forward: y = x·w (saves x). Rerun: x·w, then tanh (one more save). PyTorch stops the
    // rerun once the forward's saves are back: no error, dL/dw = x = tanh(1) = 0.7616.
    let (y, w) = flaky(|call| call > 1, false);
    y.sum().unwrap().backward().unwrap();
    let tanh1 = 1.0f32.tanh();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![tanh1; 4]);
    assert_eq!(rewind::tape::saved_bytes(), 0);
}

#[test]
fn a_rerun_that_saves_fewer_fails_with_pytorchs_count() {
    // Forward: x·w (saves x), tanh (saves its output): 2. Rerun: x·w only: 1.
    let (y, _) = flaky(|call| call == 1, false);
    let err = y.sum().unwrap().backward().unwrap_err();
    assert!(matches!(err, Error::Checkpoint(_)));
    rewind::tape::clear();
    assert_eq!(
        rewind::tape::saved_bytes(),
        0,
        "a failed backward leaves nothing saved behind once the tape is cleared"
    );
    // PyTorch 2.15's text, up to its debugging tip.
    assert!(
        err.to_string().ends_with(
            "torch.utils.checkpoint: A different number of tensors was saved during the original forward and recomputation.\nNumber of tensors saved during forward: 2\nNumber of tensors saved during recomputation: 1."
        ),
        "{err}"
    );
}

#[test]
fn a_rerun_that_saves_another_shape_fails_with_pytorchs_metadata_error() {
    // Rerun: tanh on a [2, 2] view: the tensor at position 1 (tanh's output) differs.
    let (y, _) = flaky(|_| true, true);
    let err = y.sum().unwrap().backward().unwrap_err();
    assert!(
        err.to_string().ends_with(
            "torch.utils.checkpoint: Recomputed values for the following tensors have different metadata than during the forward pass.\ntensor at position 1:\nsaved metadata: {'shape': torch.Size([4]), 'dtype': torch.float32, 'device': device(type='cpu')}\nrecomputed metadata: {'shape': torch.Size([2, 2]), 'dtype': torch.float32, 'device': device(type='cpu')}\n."
        ),
        "{err}"
    );
}

#[test]
fn reentrant_recompute_without_grad_output_fails_like_pytorch() {
    let x = Tensor::from_vec(vec![1.0f32; 4], &[4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let body: rewind::checkpoint::Body =
        Rc::new(|xs: &[Tensor]| Ok(xs[0].mul_scalar(2.0)?.detach()));
    let y = checkpoint("detached", MODE_R, &[&x], body).unwrap();
    assert!(
        y.requires_grad(),
        "reentrant: an input requires grad, so the output does"
    );
    let err = y.sum().unwrap().backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        "none of output has requires_grad=True, this checkpoint() is not necessary"
    );
}

#[test]
fn reentrant_backward_follows_a_captured_non_leaf_into_the_forward_graph_and_frees_it_like_pytorch()
{
    // PyTorch's reentrant backward is a nested autograd.backward: a gradient leaving the body
    // through a captured tensor that is not a leaf (c = w·w, whose backward saved w) goes on
    // into the forward's graph and frees it. One segment: w gets its gradient
    // (d/dw Σ x·w² = 2·x·w = 4). Two segments sharing c: the second meets the freed graph —
    // "backward through the graph a second time".
    let leaf = |v: f32| {
        Tensor::from_vec(vec![v; 4], &[4])
            .unwrap()
            .requires_grad_(true)
            .unwrap()
    };
    let (x, w) = (leaf(2.0), leaf(1.0));
    let c = w.mul(&w).unwrap();
    let captured = c.clone();
    let body: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| xs[0].mul(&captured));
    let y = checkpoint("one", MODE_R, &[&x], body.clone()).unwrap();
    y.sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![4.0; 4]);
    assert_eq!(x.grad().unwrap().to_vec_f32(), vec![1.0; 4]);

    let c = w.mul(&w).unwrap();
    let (a, b) = (c.clone(), c.clone());
    let first: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| xs[0].mul(&a));
    let second: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| xs[0].mul(&b));
    let h = checkpoint("first", MODE_R, &[&x], first).unwrap();
    let y = checkpoint("second", MODE_R, &[&h], second).unwrap();
    let err = y.sum().unwrap().backward().unwrap_err();
    assert_eq!(err.to_string(), rewind::error::GRAPH_FREED_MSG);
    tape::clear();
}
