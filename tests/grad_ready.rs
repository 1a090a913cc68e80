//! The gradient-ready event (`BackwardOptions::on_grad_ready`): once per trainable leaf per
//! backward, during the sweep, with the leaf's `.grad` already final — for tied weights,
//! checkpoint segments of both modes, selective segments and accumulated gradients. (PyTorch
//! DDP's per-parameter hooks fire twice under reentrant checkpointing — "Expected to mark a
//! variable ready only once" — because they fire inside the rerun's backward.)

mod common;

use rewind::checkpoint::{Body, CheckpointMode, SavePolicy, checkpoint, checkpoint_with_policy};
use rewind::{BackwardOptions, GradReady, Tensor};
use std::cell::RefCell;
use std::rc::Rc;

fn leaf(shape: &[usize], seed: u64) -> Tensor {
    common::randn(shape, seed, 0.5)
        .requires_grad_(true)
        .unwrap()
}

/// What one call of the hook saw: which parameter, its `.grad` then, and which of the
/// parameters had any gradient at that moment.
struct Fired {
    which: usize,
    grad: Vec<f32>,
    others_had_grad: Vec<bool>,
}

/// Runs `loss().backward` with a hook that records every call, for leaves `params`.
fn backward_recording(params: &[Tensor], loss: &Tensor) -> Vec<Fired> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (log, ps) = (seen.clone(), params.to_vec());
    let opts = BackwardOptions {
        on_grad_ready: Some(GradReady::new(move |t: &Tensor| {
            let which = ps
                .iter()
                .position(|p| p.same_handle(t))
                .expect("only the parameters are leaves");
            log.borrow_mut().push(Fired {
                which,
                grad: t
                    .grad()
                    .expect("a ready leaf has its gradient")
                    .to_vec_f32(),
                others_had_grad: ps.iter().map(|p| p.grad().is_some()).collect(),
            });
        })),
        ..Default::default()
    };
    loss.backward_with(None, opts).unwrap();
    Rc::try_unwrap(seen).ok().unwrap().into_inner()
}

/// Every parameter fired exactly once, with the gradient it ends the backward with.
fn once_each_with_final_grads(params: &[Tensor], fired: &[Fired]) {
    let mut order: Vec<usize> = fired.iter().map(|f| f.which).collect();
    order.sort_unstable();
    assert_eq!(order, (0..params.len()).collect::<Vec<_>>(), "once each");
    for f in fired {
        assert_eq!(
            f.grad,
            params[f.which].grad().unwrap().to_vec_f32(),
            "parameter {} fired before its gradient was final",
            f.which
        );
    }
}

#[test]
fn each_parameter_is_ready_once_as_soon_as_its_gradient_is_final() {
    // x → tanh(x·w0) → tanh(·w1) → ·w2 → sum: the sweep finishes w2 first, w0 last, and w2's
    // event comes while w0 has no gradient yet (a bucket could be reduced from there on).
    let x = common::randn(&[4, 3], 1, 1.0);
    let w: Vec<Tensor> = (0..3).map(|i| leaf(&[3, 3], 10 + i)).collect();
    let y = x.matmul(&w[0]).unwrap().tanh().unwrap();
    let y = y.matmul(&w[1]).unwrap().tanh().unwrap();
    let loss = y.matmul(&w[2]).unwrap().sum().unwrap();
    let fired = backward_recording(&w, &loss);
    once_each_with_final_grads(&w, &fired);
    assert_eq!(fired.iter().map(|f| f.which).collect::<Vec<_>>(), [2, 1, 0]);
    assert_eq!(fired[0].others_had_grad, [false, false, true]);
}

#[test]
fn a_tied_weight_is_ready_once_after_both_of_its_uses() {
    // GPT-2's tying: the embedding table is also the head, h = tanh(x·E), logits = h·Eᵀ. The
    // head's use is finished first; E is ready only after the embedding's use too.
    let x = common::randn(&[2, 4], 2, 1.0);
    let (e, w) = (leaf(&[4, 4], 20), leaf(&[4, 4], 21));
    let h = x.matmul(&e).unwrap().tanh().unwrap().matmul(&w).unwrap();
    let loss = h
        .matmul(&e.transpose(0, 1).unwrap())
        .unwrap()
        .powf(2.0)
        .unwrap()
        .sum()
        .unwrap();
    let params = [e, w];
    let fired = backward_recording(&params, &loss);
    once_each_with_final_grads(&params, &fired);
    assert_eq!(fired.iter().map(|f| f.which).collect::<Vec<_>>(), [1, 0]);
}

/// x·w0 → segment(tanh(h·w1)·w2) → ·w3 and also ·w1 outside (w1 tied across the boundary) →
/// sum, the segment run by `run`.
fn segmented(run: impl Fn(&Tensor, Body) -> Tensor) -> (Vec<Tensor>, Tensor) {
    let x = common::randn(&[3, 4], 3, 1.0);
    let w: Vec<Tensor> = (0..4).map(|i| leaf(&[4, 4], 30 + i)).collect();
    let h = x.matmul(&w[0]).unwrap();
    let (w1, w2) = (w[1].clone(), w[2].clone());
    let body: Body = Rc::new(move |xs: &[Tensor]| xs[0].matmul(&w1)?.tanh()?.matmul(&w2));
    let s = run(&h, body);
    let out = s
        .matmul(&w[3])
        .unwrap()
        .add(&s.matmul(&w[1]).unwrap())
        .unwrap();
    let loss = out.powf(2.0).unwrap().sum().unwrap();
    (w, loss)
}

#[test]
fn checkpointed_parameters_are_ready_once_in_either_mode() {
    let stored = {
        let (w, loss) = segmented(|h, body| body(std::slice::from_ref(h)).unwrap());
        let fired = backward_recording(&w, &loss);
        once_each_with_final_grads(&w, &fired);
        w.iter()
            .map(|p| p.grad().unwrap().to_vec_f32())
            .collect::<Vec<_>>()
    };
    for mode in [CheckpointMode::NonReentrant, CheckpointMode::Reentrant] {
        let (w, loss) = segmented(|h, body| checkpoint("seg", mode, &[h], body).unwrap());
        let fired = backward_recording(&w, &loss);
        once_each_with_final_grads(&w, &fired);
        // w3 (outside, last) first; w0 (before the segment) last; w1, used inside and outside,
        // only once the segment is done — in the reentrant mode, after its inner sweep.
        let order: Vec<usize> = fired.iter().map(|f| f.which).collect();
        assert_eq!((order[0], order[3]), (3, 0), "{mode:?}: {order:?}");
        let grads: Vec<Vec<f32>> = w.iter().map(|p| p.grad().unwrap().to_vec_f32()).collect();
        assert_eq!(
            grads, stored,
            "{mode:?}: the gradients are storing everything's"
        );
    }
}

#[test]
fn selective_segments_make_each_parameter_ready_once() {
    for policy in [
        SavePolicy::SaveMatmuls,
        SavePolicy::SaveNames(vec!["none".into()]),
    ] {
        let (w, loss) = segmented(|h, body| {
            checkpoint_with_policy("seg", CheckpointMode::NonReentrant, &[h], body, &policy)
                .unwrap()
        });
        let fired = backward_recording(&w, &loss);
        once_each_with_final_grads(&w, &fired);
    }
}

#[test]
fn accumulating_backwards_each_fire_with_the_gradient_so_far() {
    // Two micro-batches: the second backward's events carry the sum of both.
    let w = leaf(&[3, 2], 40);
    let run = |seed| {
        let x = common::randn(&[5, 3], seed, 1.0);
        x.matmul(&w).unwrap().tanh().unwrap().sum().unwrap()
    };
    let first = backward_recording(std::slice::from_ref(&w), &run(41));
    let after_one = w.grad().unwrap().to_vec_f32();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].grad, after_one);
    let second = backward_recording(std::slice::from_ref(&w), &run(42));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].grad, w.grad().unwrap().to_vec_f32());
    assert_ne!(second[0].grad, after_one, "the second adds to the first");
}

#[test]
fn a_parameter_the_loss_does_not_reach_is_never_ready() {
    let x = common::randn(&[2, 2], 5, 1.0);
    let (used, unused) = (leaf(&[2, 2], 50), leaf(&[2, 2], 51));
    let _other = x.matmul(&unused).unwrap();
    let loss = x.matmul(&used).unwrap().sum().unwrap();
    let params = [used, unused];
    let fired = backward_recording(&params, &loss);
    assert_eq!(fired.iter().map(|f| f.which).collect::<Vec<_>>(), [0]);
    // A backward from a leaf itself: ready at once.
    let l = leaf(&[1], 52);
    let fired = backward_recording(std::slice::from_ref(&l), &l);
    assert_eq!(fired.len(), 1);
}
