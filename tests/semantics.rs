//! PyTorch's requires-grad semantics, one behaviour per test.

use approx::assert_relative_eq;
use rewind::{BackwardOptions, DType, Error, NoGradGuard, Tensor, tape};

mod common;
use common::{param, t};

#[test]
fn output_requires_grad_iff_some_input_does() {
    let a = t(&[1.0, 2.0], &[2]);
    let b = param(&[3.0, 4.0], &[2]);
    assert!(!a.mul(&a).unwrap().requires_grad());
    assert!(a.mul(&b).unwrap().requires_grad());
    assert!(b.mul(&a).unwrap().requires_grad());
}

#[test]
fn output_of_frozen_op_records_nothing() {
    tape::clear();
    let frozen = t(&[1.0, 2.0, 3.0], &[3]);
    let before = (tape::entries().len(), tape::saved_bytes());
    // tanh saves its output, mul saves its operands — but only when recorded.
    let y = frozen.tanh().unwrap().mul(&frozen).unwrap().exp().unwrap();
    assert!(!y.requires_grad());
    assert!(y.is_leaf());
    assert_eq!((tape::entries().len(), tape::saved_bytes()), before);
}

#[test]
fn no_grad_scope_records_nothing_and_restores_mode() {
    tape::clear();
    let w = param(&[1.0, 2.0], &[2]);
    {
        let _g = NoGradGuard::new();
        let y = w.tanh().unwrap();
        assert!(!y.requires_grad());
        assert!(!tape::is_grad_enabled());
        {
            let _e = rewind::EnableGradGuard::new();
            assert!(w.tanh().unwrap().requires_grad());
        }
        assert!(!tape::is_grad_enabled());
    }
    assert!(tape::is_grad_enabled());
    assert!(w.tanh().unwrap().requires_grad());
}

#[test]
fn backward_on_tensor_without_grad_path_fails_like_pytorch() {
    let x = t(&[1.0, 2.0], &[2]);
    let loss = x.tanh().unwrap().sum().unwrap();
    let err = loss.backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        "element 0 of tensors does not require grad and does not have a grad_fn"
    );
    assert!(matches!(err, Error::NoGradFn { .. }));
}

#[test]
fn implicit_grad_on_non_scalar_fails_like_pytorch() {
    let w = param(&[1.0, 2.0], &[2]);
    let y = w.tanh().unwrap();
    assert_eq!(
        y.backward().unwrap_err().to_string(),
        "grad can be implicitly created only for scalar outputs"
    );
    // An explicit output gradient is fine: d(Σ g·tanh w)/dw = g·(1 − tanh²w).
    let g = t(&[1.0, 0.5], &[2]);
    y.backward_with(Some(&g), BackwardOptions::default())
        .unwrap();
    let want: Vec<f32> = [1.0f32, 2.0]
        .iter()
        .zip([1.0, 0.5])
        .map(|(w, g)| g * (1.0 - w.tanh().powi(2)))
        .collect();
    assert_relative_eq!(
        w.grad().unwrap().to_vec_f32().as_slice(),
        want.as_slice(),
        max_relative = 1e-6
    );
}

#[test]
fn second_backward_without_retain_graph_fails_like_pytorch() {
    let w = param(&[1.0, 2.0], &[2]);
    let loss = w.tanh().unwrap().sum().unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Trying to backward through the graph a second time")
    );
    assert_eq!(err, Error::GraphFreed);
}

#[test]
fn retain_graph_allows_second_backward_and_grads_accumulate() {
    // d(Σ w²)/dw = 2w, twice → 4w.
    let w = param(&[1.0, -3.0], &[2]);
    let loss = w.mul(&w).unwrap().sum().unwrap();
    loss.backward_with(
        None,
        BackwardOptions {
            retain_graph: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![2.0, -6.0]);
    loss.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![4.0, -12.0]);
}

#[test]
fn leaf_grads_accumulate_across_backward_calls() {
    // y = Σ 3w → dy/dw = 3 per call; two separate graphs add up to 6.
    let w = param(&[1.0, 2.0, 3.0], &[3]);
    for _ in 0..2 {
        w.mul_scalar(3.0)
            .unwrap()
            .sum()
            .unwrap()
            .backward()
            .unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![6.0; 3]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

#[test]
fn non_leaf_grads_are_dropped_unless_retained() {
    // h = 2w, y = Σ h² → dy/dh = 2h = 4w.
    let w = param(&[1.0, 2.0], &[2]);
    let h = w.mul_scalar(2.0).unwrap();
    let k = w.mul_scalar(2.0).unwrap();
    k.retain_grad();
    h.mul(&h)
        .unwrap()
        .sum()
        .unwrap()
        .add(&k.mul(&k).unwrap().sum().unwrap())
        .unwrap()
        .backward()
        .unwrap();
    assert!(h.grad().is_none());
    assert_eq!(k.grad().unwrap().to_vec_f32(), vec![4.0, 8.0]);
    assert!(!h.is_leaf() && w.is_leaf());
}

#[test]
fn detach_cuts_the_grad_path() {
    let w = param(&[2.0], &[1]);
    let d = w.mul_scalar(3.0).unwrap().detach();
    assert!(!d.requires_grad() && d.is_leaf());
    // y = w·d with d constant: dy/dw = d = 6.
    w.mul(&d).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![6.0]);
}

#[test]
fn requires_grad_on_output_without_grad_path_makes_a_new_leaf() {
    // The mechanism behind enable_input_require_grads: a frozen op's output becomes a leaf.
    let frozen = t(&[1.0, 2.0], &[2]);
    let e = frozen.mul_scalar(2.0).unwrap();
    e.requires_grad_(true).unwrap();
    assert!(e.is_leaf() && e.requires_grad());
    e.mul(&e).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(e.grad().unwrap().to_vec_f32(), vec![4.0, 8.0]);
}

#[test]
fn requires_grad_false_on_non_leaf_fails_like_pytorch() {
    let w = param(&[1.0], &[1]);
    let y = w.tanh().unwrap();
    assert!(
        y.requires_grad_(false)
            .unwrap_err()
            .to_string()
            .starts_with("you can only change requires_grad flags of leaf variables.")
    );
    assert!(y.requires_grad_(true).is_ok());
}

#[test]
fn shared_input_gradients_sum_over_uses() {
    // y = Σ (w·w + w) → dy/dw = 2w + 1.
    let w = param(&[1.0, 2.0], &[2]);
    w.mul(&w)
        .unwrap()
        .add(&w)
        .unwrap()
        .sum()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![3.0, 5.0]);
}

#[test]
fn unused_input_gets_no_gradient() {
    let a = param(&[1.0], &[1]);
    let b = param(&[1.0], &[1]);
    let _unused = b.tanh().unwrap();
    a.tanh().unwrap().sum().unwrap().backward().unwrap();
    assert!(a.grad().is_some());
    assert!(b.grad().is_none());
}

#[test]
fn backward_on_a_leaf_seeds_its_own_grad() {
    let w = param(&[5.0], &[]);
    w.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![1.0]);
}

#[test]
fn backward_frees_saved_tensors_and_resets_the_tape() {
    tape::clear();
    let w = param(&[1.0, 2.0, 3.0], &[3]);
    let loss = w.tanh().unwrap().exp().unwrap().sum().unwrap();
    assert!(tape::saved_bytes() > 0);
    assert_eq!(tape::live_entries(), 3);
    loss.backward().unwrap();
    assert_eq!(tape::saved_bytes(), 0);
    assert_eq!(tape::live_entries(), 0);
    assert!(tape::entries().is_empty(), "a fully used tape starts over");
}

#[test]
fn graphs_nobody_can_reach_are_collected_at_the_next_backward() {
    tape::clear();
    let w = param(&[1.0, 2.0], &[2]);
    // An evaluation forward with grad on, dropped without backward (PyTorch frees it on drop).
    drop(w.tanh().unwrap().exp().unwrap());
    w.sum().unwrap().backward().unwrap();
    assert_eq!(tape::saved_bytes(), 0);
    assert_eq!(tape::live_entries(), 0);
}

#[test]
fn f16_tensors_get_f16_grads_and_cast_backward_casts_back() {
    // y = Σ cast_f16(w)·2 → dy/dw = 2 in f32.
    let w = param(&[1.0, 2.0], &[2]);
    let h = w.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    h.mul_scalar(2.0)
        .unwrap()
        .sum()
        .unwrap()
        .backward()
        .unwrap();
    let g = w.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec_f32(), vec![2.0, 2.0]);
}

#[test]
fn same_seed_gives_same_bits() {
    let run = || {
        rewind::rng::manual_seed(7);
        let x = Tensor::randn(&[8, 8]).unwrap();
        let w = param(&x.to_vec_f32(), &[8, 8]);
        let y = x
            .matmul(&w)
            .unwrap()
            .dropout(0.3, true)
            .unwrap()
            .gelu()
            .unwrap()
            .sum()
            .unwrap();
        y.backward().unwrap();
        (y.to_vec_f32(), w.grad().unwrap().to_vec_f32())
    };
    let (a, b) = (run(), run());
    assert_eq!(
        a.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        a.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn dropout_replays_its_mask_from_a_restored_generator_state() {
    rewind::rng::manual_seed(3);
    let x = Tensor::ones(&[1000], DType::F32).unwrap();
    let state = rewind::rng::get_state();
    let a = x.dropout(0.5, true).unwrap().to_vec_f32();
    rewind::rng::set_state(state);
    let b = x.dropout(0.5, true).unwrap().to_vec_f32();
    assert_eq!(a, b);
    let kept = a.iter().filter(|&&v| v != 0.0).count();
    assert!((400..600).contains(&kept), "kept {kept} of 1000 at p = 0.5");
    assert!(
        a.iter().all(|&v| v == 0.0 || v == 2.0),
        "kept values are scaled by 1/(1−p)"
    );
}

#[test]
fn tape_dump_lists_ops_inputs_shapes_and_saved_bytes() {
    tape::clear();
    let w = param(&[1.0, 2.0], &[2]);
    let y = w.tanh().unwrap().sum().unwrap();
    let dump = tape::dump();
    assert!(
        dump.contains("tanh") && dump.contains("sum") && dump.contains("leaf"),
        "{dump}"
    );
    let e = tape::entries();
    assert_eq!(
        (e[0].op, e[0].saved_bytes, e[1].op, e[1].saved_bytes),
        ("tanh", 8, "sum", 0)
    );
    assert_eq!(e[1].inputs, vec!["#0".to_string()]);
    y.backward().unwrap();
}

/// Σ over blocks of narrow(x)·w_block for a 4×6 x: rows 0..2 and 2..4, and columns 1..4 of
/// every row (overlapping the row blocks); all values dyadic, so every sum is exact in f32.
fn narrowed_loss(x: &Tensor) -> Tensor {
    let a = x
        .narrow(0, 0, 2)
        .unwrap()
        .mul_scalar(0.5)
        .unwrap()
        .sum()
        .unwrap();
    let b = x
        .narrow(0, 2, 2)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap()
        .sum()
        .unwrap();
    let c = x
        .narrow(1, 1, 3)
        .unwrap()
        .mul_scalar(0.25)
        .unwrap()
        .sum()
        .unwrap();
    a.add(&b).unwrap().add(&c).unwrap()
}

/// d(narrowed_loss)/dx: 0.5 on rows 0..2, 2 on rows 2..4, plus 0.25 on columns 1..4.
fn narrowed_grad(scale: f32) -> Vec<f32> {
    (0..24)
        .map(|e| {
            let (r, c) = (e / 6, e % 6);
            let row = if r < 2 { 0.5 } else { 2.0 };
            let col = if (1..4).contains(&c) { 0.25 } else { 0.0 };
            scale * (row + col)
        })
        .collect()
}

#[test]
fn narrow_gradients_add_into_a_leaf_and_an_entry_exactly_and_never_into_a_held_grad() {
    // Several narrows of one tensor add their slices straight into its gradient so far: the
    // values are those of adding zero-padded gradients.
    let x = param(&[0.0; 24], &[4, 6]);
    narrowed_loss(&x).backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32(), narrowed_grad(1.0), "leaf");
    // Through an entry (x·3 feeds the narrows): its gradient is built the same way.
    let y = param(&[0.0; 24], &[4, 6]);
    narrowed_loss(&y.mul_scalar(3.0).unwrap())
        .backward()
        .unwrap();
    assert_eq!(y.grad().unwrap().to_vec_f32(), narrowed_grad(3.0), "entry");
    // A .grad the caller holds is not written in place (PyTorch accumulates out of place
    // when the gradient is referenced elsewhere): the held copy keeps its values.
    let held = x.grad().unwrap();
    narrowed_loss(&x).backward().unwrap();
    assert_eq!(held.to_vec_f32(), narrowed_grad(1.0), "held grad unchanged");
    assert_eq!(
        x.grad().unwrap().to_vec_f32(),
        narrowed_grad(2.0),
        "accumulated"
    );
}
