//! Where rewind once differed from PyTorch: each test names PyTorch's behaviour and checks the
//! value PyTorch 2.15 produced (`scripts/parity_reference.py` → `tests/fixtures/parity.json`).

mod common;

use common::param;
use rewind::amp::{GradScaler, ScalerState};
use rewind::optim::{AdamW, Optimizer, ParamGroup, Sgd};
use rewind::{GeluApprox, Tensor};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/parity.json")).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The script's `grid`: lo + (hi − lo)·(k/(n−1)), each operation rounded in f32.
fn grid(n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|k| lo + (hi - lo) * (k as f32 / (n - 1) as f32))
        .collect()
}

fn max_abs_err(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

#[test]
fn max_over_all_elements_splits_the_gradient_evenly_among_ties_like_pytorch() {
    // torch: tensor([[1., 5.], [5., 2.]]).max().backward() → grad [[0, .5], [.5, 0]]
    let a = param(&[1.0, 5.0, 5.0, 2.0], &[2, 2]);
    a.max().unwrap().backward().unwrap();
    let want = f32s(&fixture()["max_ties_grad"]);
    assert_eq!(a.grad().unwrap().to_vec_f32(), want);
    // max(dim) routes to the returned index only (first maximum), as in PyTorch.
    let b = param(&[5.0, 5.0], &[2]);
    b.max_dim(0, false).unwrap().0.backward().unwrap();
    assert_eq!(b.grad().unwrap().to_vec_f32(), vec![1.0, 0.0]);
}

#[test]
fn adamw_keeps_a_step_per_parameter_like_pytorch() {
    // p2 first gets a gradient at step 5: PyTorch's bias correction for it starts at t = 1.
    // A single global step (t = 5 at its first update) moved it by ≈ 1e-2 within 20 steps.
    let p1 = param(&[0.5, -0.25, 1.0], &[3]);
    let p2 = param(&[1.0, 2.0], &[2]);
    let mut opt = AdamW::new(vec![ParamGroup::new(
        vec![p1.clone(), p2.clone()],
        0.1,
        0.01,
    )]);
    for step in 1..=20 {
        opt.zero_grad();
        let mut loss = p1.mul(&p1).unwrap().sum().unwrap();
        if step >= 5 {
            let cube = p2.mul(&p2).unwrap().mul(&p2).unwrap().sum().unwrap();
            loss = loss.add(&cube).unwrap();
        }
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    let want = &fixture()["adamw_late_param"];
    for (p, key) in [(&p1, "p1"), (&p2, "p2")] {
        for (g, w) in p.to_vec_f32().iter().zip(f32s(&want[key])) {
            // f32 arithmetic in a different order than PyTorch's foreach kernels.
            assert!((g - w).abs() <= 2e-6, "{key}: {g} vs PyTorch {w}");
        }
    }
    // The per-parameter count survives a state round trip.
    let mut again = AdamW::new(vec![ParamGroup::new(
        vec![p1.clone(), p2.clone()],
        0.1,
        0.01,
    )]);
    again.load_state_dict(opt.state_dict()).unwrap();
    assert_eq!(again.state_dict(), opt.state_dict());
}

#[test]
fn grad_scaler_checks_the_incoming_gradient_for_inf_like_pytorch() {
    // PyTorch's _amp_foreach_non_finite_check_and_unscale_ tests the scaled gradient: with
    // scale 0.5 a finite 3e38 is not "found inf", the step runs, and 3e38·2 overflows to inf,
    // so SGD (lr 1) makes the parameter −inf.
    let p = param(&[1.0], &[1]);
    p.set_grad(Some(Tensor::from_vec(vec![3e38f32], &[1]).unwrap()));
    let mut opt = Sgd::new(vec![ParamGroup::new(vec![p.clone()], 1.0, 0.0)], 0.0, false).unwrap();
    let mut scaler = GradScaler::new();
    scaler.load_state_dict(ScalerState {
        scale: 0.5,
        growth_tracker: 0,
    });
    assert!(scaler.step(&mut opt).unwrap(), "the step was taken");
    assert_eq!(p.to_vec_f32(), vec![f32::NEG_INFINITY]);
    scaler.update();
    // An incoming inf is found: the step is skipped and the scale backs off.
    p.set_grad(Some(Tensor::from_vec(vec![f32::INFINITY], &[1]).unwrap()));
    let q = param(&[2.0], &[1]);
    q.set_grad(Some(Tensor::from_vec(vec![f32::INFINITY], &[1]).unwrap()));
    let mut opt = Sgd::new(vec![ParamGroup::new(vec![q.clone()], 1.0, 0.0)], 0.0, false).unwrap();
    assert!(!scaler.step(&mut opt).unwrap());
    scaler.update();
    assert_eq!((q.to_vec_f32(), scaler.get_scale()), (vec![2.0], 0.25));
}

/// Tanh GELU and its derivative in f64 (the reference).
fn gelu_tanh_f64(x: f64) -> (f64, f64) {
    const K: f64 = 0.797_884_560_802_865_4;
    const C: f64 = 0.044_715;
    let t = (K * (x + C * x * x * x)).tanh();
    let y = 0.5 * x * (1.0 + t);
    let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * C * x * x);
    (y, dy)
}

#[test]
fn tanh_gelu_and_its_derivative_are_as_accurate_as_pytorch_f32() {
    // PyTorch f32 on 4001 points in [−12, 12], against f64: worst |Δy| 4.3e-7, |Δy'| 1.0e-6.
    // rewind's derivative used to saturate to exactly 0 or 1 for |x| ≳ 4.8.
    let f = &fixture()["gelu_tanh"];
    let xs = grid(4001, -12.0, 12.0);
    let x = param(&xs, &[xs.len()]);
    let y = x.gelu_with(GeluApprox::Tanh).unwrap();
    y.sum().unwrap().backward().unwrap();
    let (want_y, want_dy): (Vec<f64>, Vec<f64>) =
        xs.iter().map(|&v| gelu_tanh_f64(v as f64)).unzip();
    let err_y = max_abs_err(&y.to_vec_f32(), &want_y);
    let err_dy = max_abs_err(&x.grad().unwrap().to_vec_f32(), &want_dy);
    let (torch_y, torch_dy) = (
        f["torch_f32_max_abs_err_y"].as_f64().unwrap(),
        f["torch_f32_max_abs_err_dy"].as_f64().unwrap(),
    );
    assert!(
        err_y <= torch_y,
        "y: rewind {err_y:e} vs PyTorch {torch_y:e}"
    );
    assert!(
        err_dy <= torch_dy,
        "y': rewind {err_dy:e} vs PyTorch {torch_dy:e}"
    );
    // Deep in the tails the derivative is neither exactly 0 nor exactly 1.
    let g = x.grad().unwrap().to_vec_f32();
    let at = |v: f32| g[xs.iter().position(|&x| x >= v).unwrap()];
    assert!(at(-5.0) < 0.0 && at(5.0) > 1.0, "{} {}", at(-5.0), at(5.0));
}

/// Layer norm of one row and its input gradient for output gradient `g`, in f64.
fn layer_norm_f64(x: &[f64], w: &[f64], b: &[f64], g: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let r = 1.0 / (var + 1e-5).sqrt();
    let xhat: Vec<f64> = x.iter().map(|v| (v - mean) * r).collect();
    let y = xhat
        .iter()
        .zip(w)
        .zip(b)
        .map(|((h, w), b)| h * w + b)
        .collect();
    let gy: Vec<f64> = g.iter().zip(w).map(|(g, w)| g * w).collect();
    let m1 = gy.iter().sum::<f64>() / n;
    let m2 = gy.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
    let dx = gy
        .iter()
        .zip(&xhat)
        .map(|(gy, h)| r * (gy - m1 - h * m2))
        .collect();
    (y, dx)
}

#[test]
fn layer_norm_of_rows_with_a_large_mean_and_small_spread_beats_pytorch_f32() {
    // Rows around 1e4 with spreads 2^-r·0.75 (r = 0..7). PyTorch f32 against f64: worst
    // |Δy| 0.12 and |Δdx| 20 (of |dx| up to 127). rewind computes row statistics in f64.
    let f = &fixture()["layer_norm"];
    let (rows, d) = (8usize, 256usize);
    let xs: Vec<f32> = (0..rows * d)
        .map(|i| {
            let (k, r) = (i as f32, (i / d) as i32);
            10000.0 + ((k % 97.0) - 48.0) / 64.0 * 2f32.powi(-r)
        })
        .collect();
    let (ws, bs, gs) = (
        grid(d, 0.5, 1.5),
        grid(d, -0.25, 0.25),
        grid(rows * d, -1.0, 1.0),
    );
    let x = param(&xs, &[rows, d]);
    let (w, b) = (param(&ws, &[d]), param(&bs, &[d]));
    let y = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap();
    let g = Tensor::from_vec(gs.clone(), &[rows, d]).unwrap();
    y.backward_with(Some(&g), Default::default()).unwrap();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (mut want_y, mut want_dx) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let span = r * d..(r + 1) * d;
        let (y, dx) = layer_norm_f64(
            &wide(&xs[span.clone()]),
            &wide(&ws),
            &wide(&bs),
            &wide(&gs[span]),
        );
        want_y.extend(y);
        want_dx.extend(dx);
    }
    let err_y = max_abs_err(&y.to_vec_f32(), &want_y);
    let err_dx = max_abs_err(&x.grad().unwrap().to_vec_f32(), &want_dx);
    let torch_y = f["torch_f32_max_abs_err_y"].as_f64().unwrap();
    let torch_dx = f["torch_f32_max_abs_err_dx"].as_f64().unwrap();
    assert!(err_y <= torch_y && err_dx <= torch_dx);
    // Tighter than PyTorch: y within f32 rounding (|y| < 3), dx within the rounding of the
    // saved f32 1/σ (relative 6e-8 of |dx| ≤ 127).
    assert!(err_y <= 1e-6, "y: {err_y:e}");
    assert!(err_dx <= 2e-5, "dx: {err_dx:e}");
}
