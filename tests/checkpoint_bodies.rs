//! What a checkpoint body may do, as PyTorch allows it: call `backward()` inside (gradients as
//! PyTorch 2.15 gives them, `scripts/checkpoint_bodies_reference.py` →
//! `tests/fixtures/checkpoint_bodies.json`), compute other values when rerun (non-reentrant
//! backpropagates through the forward's graph, reentrant through the rerun's), fail or panic —
//! after which the thread's engine works as before.

mod common;
use common::json_floats;

use common::param;
use rewind::checkpoint::{Body, CheckpointMode, checkpoint};
use rewind::{BackwardOptions, Error, Tensor, tape};
use serde_json::Value;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/checkpoint_bodies.json")).unwrap()
}

const MODES: [(CheckpointMode, &str); 2] = [
    (CheckpointMode::NonReentrant, "non_reentrant"),
    (CheckpointMode::Reentrant, "reentrant"),
];

/// y = 3·(x·w)², the body running a backward of (x·w)² before computing y (`first`) or after.
fn backward_inside(mode: CheckpointMode, first: bool) -> (Tensor, Tensor, rewind::Result<Tensor>) {
    let (w, x) = (param(&[1.0, 2.0], &[2]), param(&[3.0, 4.0], &[2]));
    let retain = BackwardOptions {
        retain_graph: true,
        ..Default::default()
    };
    let w2 = w.clone();
    let body: Body = Rc::new(move |xs: &[Tensor]| {
        let h = xs[0].mul(&w2)?;
        if first {
            h.powf(2.0)?.sum()?.backward_with(None, retain.clone())?;
        }
        let y = h.powf(2.0)?;
        if !first {
            y.sum()?.backward_with(None, retain.clone())?;
        }
        y.mul_scalar(3.0)
    });
    let y = checkpoint("inner_backward", mode, &[&x], body);
    (w, x, y)
}

#[test]
fn backward_inside_a_body_gives_pytorchs_gradients_in_each_mode() {
    let f = fixture();
    for (mode, key) in MODES {
        for (first, order) in [(true, "first"), (false, "last")] {
            let want = &f[format!("backward_inside_{key}_{order}")];
            let (w, x, y) = backward_inside(mode, first);
            if let Some(msg) = want.get("error") {
                // Reentrant: the forward runs with grad off, so the inner backward finds a
                // tensor that does not require grad.
                let err = y.unwrap_err();
                assert!(
                    matches!(err, Error::NoGradFn { .. }),
                    "{key} {order}: {err}"
                );
                assert_eq!(err.to_string(), msg.as_str().unwrap());
                continue;
            }
            let y = y.unwrap();
            let grads = |t: &Tensor| t.grad().unwrap().to_vec_f32();
            let (fw, bw) = (&want["after_forward"], &want["after_backward"]);
            assert_eq!(
                grads(&w),
                json_floats(&fw["w"]),
                "{key} {order}: w after forward"
            );
            assert_eq!(
                grads(&x),
                json_floats(&fw["x"]),
                "{key} {order}: x after forward"
            );
            y.sum().unwrap().backward().unwrap();
            // `first`: the rerun replays the inner backward too (PyTorch recomputes up to the
            // forward's last save, which comes after it), so its gradient counts twice.
            assert_eq!(
                grads(&w),
                json_floats(&bw["w"]),
                "{key} {order}: w after backward"
            );
            assert_eq!(
                grads(&x),
                json_floats(&bw["x"]),
                "{key} {order}: x after backward"
            );
            assert_eq!(tape::saved_bytes(), 0, "{key} {order}");
        }
    }
}

/// Bodies whose value depends on c, the body's call count (1 in the forward, 2 in the rerun).
#[derive(Debug, Clone, Copy)]
enum Counting {
    /// x·x·c
    Mul,
    /// x²·c
    Pow,
    /// (x·c)²: the tensor pow saves, x·c, is recomputed with c = 2.
    ScaledPow,
}

fn counting(mode: CheckpointMode, kind: Counting) -> Vec<f32> {
    let x = param(&[1.0, 2.0], &[2]);
    let calls = Rc::new(Cell::new(0.0));
    let c = calls.clone();
    let body: Body = Rc::new(move |xs: &[Tensor]| {
        c.set(c.get() + 1.0);
        let x = &xs[0];
        match kind {
            Counting::Mul => x.mul(x)?.mul_scalar(c.get()),
            Counting::Pow => x.powf(2.0)?.mul_scalar(c.get()),
            Counting::ScaledPow => x.mul_scalar(c.get())?.powf(2.0),
        }
    });
    let y = checkpoint("counting", mode, &[&x], body).unwrap();
    y.sum().unwrap().backward().unwrap();
    x.grad().unwrap().to_vec_f32()
}

#[test]
fn a_body_that_computes_other_values_when_rerun_follows_pytorch_in_each_mode() {
    // Non-reentrant backpropagates through the forward's graph (its scalars are c = 1) fed the
    // recomputed tensors: x·x·c and x²·c give dx = 2x = [2, 4]; (x·c)² gives 2·(x·2)·1 = [4, 8].
    // Reentrant backpropagates through the rerun's graph (c = 2): [4, 8], [4, 8], [8, 16].
    let f = fixture();
    for (mode, key) in MODES {
        for (kind, name) in [
            (Counting::Mul, "mul"),
            (Counting::Pow, "pow"),
            (Counting::ScaledPow, "scaled_pow"),
        ] {
            assert_eq!(
                counting(mode, kind),
                json_floats(&f[format!("counting_{name}_{key}")]),
                "{key} {kind:?}"
            );
        }
    }
}

/// A two-step check that the thread's engine works: a plain backward and a checkpointed one.
fn engine_works() {
    let w = param(&[0.5, -1.0], &[2]);
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    x.mul(&w)
        .unwrap()
        .tanh()
        .unwrap()
        .sum()
        .unwrap()
        .backward()
        .unwrap();
    let plain = w.grad().unwrap().to_vec_f32();
    for (mode, _) in MODES {
        w.zero_grad();
        let x = x.requires_grad_(true).unwrap();
        let w2 = w.clone();
        let body: Body = Rc::new(move |xs: &[Tensor]| xs[0].mul(&w2)?.tanh());
        let y = checkpoint("after", mode, &[&x], body).unwrap();
        y.sum().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().to_vec_f32(), plain, "{mode:?}");
        x.requires_grad_(false).unwrap();
    }
    tape::clear();
    assert_eq!(tape::saved_bytes(), 0);
    assert_eq!(tape::live_entries(), 0);
}

/// A body that fails (an error or a panic) on the call numbered `when` (1 = the forward).
fn failing(mode: CheckpointMode, when: u32, panics: bool) -> rewind::Result<()> {
    let w = param(&[0.5, -1.0], &[2]);
    let x = param(&[1.0, 2.0], &[2]);
    let calls = Rc::new(Cell::new(0));
    let (w2, c) = (w.clone(), calls.clone());
    let body: Body = Rc::new(move |xs: &[Tensor]| {
        c.set(c.get() + 1);
        let h = xs[0].mul(&w2)?.tanh()?;
        if c.get() == when {
            if panics {
                panic!("body fails on call {when}");
            }
            return Err(Error::invalid("body", "fails"));
        }
        h.exp()
    });
    let y = checkpoint("failing", mode, &[&x], body)?;
    y.sum()?.backward()
}

#[test]
fn a_body_that_errors_or_panics_leaves_the_thread_working() {
    for (mode, key) in MODES {
        for when in [1, 2] {
            let phase = if when == 1 { "forward" } else { "rerun" };
            let err = failing(mode, when, false).unwrap_err();
            assert!(err.to_string().contains("fails"), "{key} {phase}: {err}");
            engine_works();
            let caught = catch_unwind(AssertUnwindSafe(|| failing(mode, when, true)));
            assert!(
                caught.is_err(),
                "{key} {phase}: the panic reaches the caller"
            );
            tape::clear();
            engine_works();
        }
    }
}
