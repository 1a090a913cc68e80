//! In-place changes and the version counter: backward refuses a saved tensor changed since it
//! was saved, with PyTorch's text (PyTorch 2.15), instead of silently using the new values.

mod common;

use common::param;
use rewind::checkpoint::{CheckpointMode, checkpoint};
use rewind::optim::{AdamW, Optimizer, ParamGroup};
use rewind::{DType, Error};
use std::rc::Rc;

const HINT: &str = "Hint: enable anomaly detection to find the operation that failed to compute its gradient, with torch.autograd.set_detect_anomaly(True, check_nan=False).";

fn add_one(w: &rewind::Tensor) {
    w.update_data::<f32>(|v| v.iter_mut().for_each(|x| *x += 1.0))
        .unwrap();
}

#[test]
fn backward_after_changing_a_saved_leaf_fails_with_pytorchs_version_error() {
    // torch: w = tensor([1., 2.], requires_grad=True); y = (w * w).sum();
    // with torch.no_grad(): w.add_(1); y.backward()  → RuntimeError (leaf: no "output 0 of")
    let w = param(&[1.0, 2.0], &[2]);
    let y = w.mul(&w).unwrap().sum().unwrap();
    add_one(&w);
    let err = y.backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "one of the variables needed for gradient computation has been modified by an inplace operation: [torch.FloatTensor [2]] is at version 1; expected version 0 instead. {HINT}"
        )
    );
    assert!(w.grad().is_none(), "no gradient from the changed values");
}

#[test]
fn backward_after_changing_a_saved_op_output_names_the_op_like_pytorch() {
    // torch: y = x.tanh(); y.detach().add_(1) (shares y's version counter); y.sum().backward()
    let x = param(&[0.5, -0.5], &[2]);
    let y = x.tanh().unwrap();
    let loss = y.sum().unwrap();
    add_one(&y.detach());
    assert_eq!(y.version(), 1, "views share the version counter");
    let err = loss.backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "one of the variables needed for gradient computation has been modified by an inplace operation: [torch.FloatTensor [2]], which is output 0 of Tanh, is at version 1; expected version 0 instead. {HINT}"
        )
    );
}

#[test]
fn an_optimizer_step_between_forward_and_backward_is_refused_not_silently_wrong() {
    // Two losses from one forward, an optimizer step after the first backward: the second
    // loss's graph saved w (x·w saves w for x's gradient), which the step changed.
    let w = param(&[1.0, 2.0, 3.0], &[3, 1]);
    let x = param(&[1.0, 1.0, 1.0], &[1, 3]);
    let first = x.matmul(&w).unwrap().sum().unwrap();
    let second = w.sum().unwrap();
    second.backward().unwrap();
    let mut opt = AdamW::new(vec![ParamGroup::new(vec![w.clone()], 0.1, 0.0)]);
    opt.step().unwrap();
    assert_eq!(w.version(), 1);
    let err = first.backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "one of the variables needed for gradient computation has been modified by an inplace operation: [torch.FloatTensor [3, 1]] is at version 1; expected version 0 instead. {HINT}"
        )
    );
    assert!(matches!(
        err,
        Error::ModifiedInplace {
            version: 1,
            expected: 0,
            ..
        }
    ));
}

#[test]
fn zero_grad_and_reading_do_not_count_as_changes() {
    let w = param(&[1.0, 2.0], &[2]);
    let y = w.mul(&w).unwrap().sum().unwrap();
    w.zero_grad();
    let _ = w.to_vec_f32();
    y.backward().unwrap();
    assert_eq!(w.version(), 0);
    // d(w·w)/dw = 2w
    assert_eq!(w.grad().unwrap().to_vec_f32(), vec![2.0, 4.0]);
}

#[test]
fn update_data_with_a_live_read_guard_is_an_error_not_a_panic() {
    let w = param(&[1.0, 2.0], &[2]);
    let guard = w.slice::<f32>().unwrap();
    let err = w.update_data::<f32>(|_| {}).unwrap_err();
    assert!(err.to_string().contains("borrowed"), "{err}");
    drop(guard);
    assert_eq!(w.version(), 0, "a refused update changes nothing");
}

#[test]
fn set_data_checks_length_and_dtype_before_changing_anything() {
    let w = param(&[1.0, 2.0, 3.0], &[3]);
    assert!(w.set_data(vec![9.0f32]).is_err());
    assert!(w.set_data(vec![9.0f64; 3]).is_err());
    // A typed accessor of the wrong dtype is PyTorch-style dtype error, not a reinterpretation.
    assert!(matches!(
        w.update_data::<f64>(|_| {}),
        Err(Error::DTypeMismatch {
            lhs: DType::F32,
            rhs: DType::F64,
            ..
        })
    ));
    assert!(w.slice::<half::bf16>().is_err() && w.to_vec::<f64>().is_err());
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(w.version(), 0);
    w.set_data(vec![4.0f32, 5.0, 6.0]).unwrap();
    assert_eq!((w.to_vec_f32(), w.version()), (vec![4.0, 5.0, 6.0], 1));
}

#[test]
fn a_checkpoint_segment_refuses_a_parameter_changed_before_its_recomputation() {
    for mode in [CheckpointMode::NonReentrant, CheckpointMode::Reentrant] {
        let w = param(&[1.0, 2.0], &[2]);
        let x = param(&[3.0, 4.0], &[2]);
        let body_w = w.clone();
        let body = Rc::new(move |xs: &[rewind::Tensor]| xs[0].mul(&body_w)?.tanh());
        let y = checkpoint("blocks.0", mode, &[&x], body).unwrap();
        let loss = y.sum().unwrap();
        add_one(&w);
        let err = loss.backward().unwrap_err();
        assert!(
            matches!(&err, Error::ModifiedInplace { .. }),
            "{mode:?}: {err}"
        );
    }
}

#[test]
fn a_segment_input_changed_before_recomputation_is_refused() {
    let x = param(&[3.0, 4.0], &[2]);
    let body = Rc::new(|xs: &[rewind::Tensor]| xs[0].tanh());
    let y = checkpoint("blocks.0", CheckpointMode::NonReentrant, &[&x], body).unwrap();
    let loss = y.sum().unwrap();
    add_one(&x);
    let err = loss.backward().unwrap_err();
    assert!(
        err.to_string()
            .contains("[torch.FloatTensor [2]] is at version 1"),
        "{err}"
    );
}
