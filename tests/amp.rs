//! Mixed precision: autocast's per-op dtype policy, GradScaler's rules (PyTorch's defaults),
//! why scaling exists (fp16 underflow), skipped steps, and accumulation.

use approx::assert_relative_eq;
use rewind::amp::{FP16_GRADS_MSG, GradScaler, UNSCALE_TWICE_MSG};
use rewind::ops::autocast::autocast;
use rewind::optim::{AdamW, Optimizer, ParamGroup, Sgd};
use rewind::{DType, Tensor, tape};

mod common;
use common::randn;

#[test]
fn autocast_runs_matmul_in_f16_and_reductions_in_f32() {
    let x = randn(&[4, 8], 1, 1.0);
    let w = randn(&[6, 8], 2, 0.3).requires_grad_(true).unwrap();
    let _ac = autocast(Some(DType::F16));
    let y = x.linear(&w, None).unwrap();
    assert_eq!(y.dtype(), DType::F16, "linear computes in f16");
    assert_eq!(
        y.relu().unwrap().dtype(),
        DType::F16,
        "other ops keep their input dtype"
    );
    assert_eq!(y.softmax(-1).unwrap().dtype(), DType::F32);
    assert_eq!(y.layer_norm(None, None, 1e-5).unwrap().dtype(), DType::F32);
    assert_eq!(y.exp().unwrap().dtype(), DType::F32);
    let loss = y.sum().unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    loss.backward().unwrap();
    assert_eq!(
        w.grad().unwrap().dtype(),
        DType::F32,
        "master weights keep f32 gradients"
    );
}

#[test]
fn weight_casts_are_cached_per_autocast_scope() {
    tape::clear();
    let w = randn(&[6, 8], 2, 0.3).requires_grad_(true).unwrap();
    let x = randn(&[4, 8], 1, 1.0);
    let _ac = autocast(Some(DType::F16));
    let a = x.linear(&w, None).unwrap();
    let b = x.linear(&w, None).unwrap();
    let casts = tape::entries().iter().filter(|e| e.op == "cast").count();
    assert_eq!(casts, 1, "the weight is cast once per scope");
    drop((a, b));
    tape::clear();
}

#[test]
fn grad_scaler_defaults_match_pytorch() {
    let s = GradScaler::new();
    assert_eq!(
        (
            s.get_scale(),
            s.growth_factor,
            s.backoff_factor,
            s.growth_interval
        ),
        (65536.0, 2.0, 0.5, 2000)
    );
}

#[test]
fn fp16_gradients_underflow_without_scaling_and_survive_with_it() {
    // loss = 1e-8 · Σ linear(x, W) in autocast: dL/dy = 1e-8 rounds to 0 in f16 (smallest
    // subnormal 6e-8), so W's gradient is all zeros; scaled by 65536 it is 6.6e-4 and survives.
    let x = randn(&[16, 32], 1, 1.0);
    let zero_fraction = |scaler: Option<&GradScaler>| {
        let w = randn(&[32, 32], 2, 0.1).requires_grad_(true).unwrap();
        {
            let _ac = autocast(Some(DType::F16));
            let loss = x
                .linear(&w, None)
                .unwrap()
                .sum()
                .unwrap()
                .mul_scalar(1e-8)
                .unwrap();
            let loss = match scaler {
                Some(s) => s.scale(&loss).unwrap(),
                None => loss,
            };
            loss.backward().unwrap();
        }
        let g = w.grad().unwrap().to_vec_f32();
        if let Some(s) = scaler {
            // Unscaled gradients equal 1e-8 · Σ_rows x to f16 accuracy.
            let expect: f32 = (0..16).map(|r| x.to_vec_f32()[r * 32]).sum::<f32>() * 1e-8;
            assert_relative_eq!(g[0] / s.get_scale(), expect, max_relative = 2e-3);
        }
        g.iter().filter(|&&v| v == 0.0).count() as f64 / g.len() as f64
    };
    assert_eq!(
        zero_fraction(None),
        1.0,
        "every gradient element underflowed"
    );
    assert_eq!(
        zero_fraction(Some(&GradScaler::new())),
        0.0,
        "none did with the scaler"
    );
}

fn adamw_setup() -> (Tensor, AdamW) {
    let w = randn(&[8], 3, 1.0).requires_grad_(true).unwrap();
    let opt = AdamW::new(vec![ParamGroup::new(vec![w.clone()], 1e-2, 0.01)]);
    (w, opt)
}

#[test]
fn injected_overflow_skips_exactly_one_step_and_halves_the_scale() {
    let (w, mut opt) = adamw_setup();
    let mut scaler = GradScaler::new();
    let step = |opt: &mut AdamW, scaler: &mut GradScaler, inject: bool| {
        let loss = w.mul(&w).unwrap().sum().unwrap();
        scaler.scale(&loss).unwrap().backward().unwrap();
        if inject {
            let mut g = w.grad().unwrap().to_vec_f32();
            g[3] = f32::INFINITY;
            w.set_grad(Some(Tensor::from_vec(g, &[8]).unwrap()));
        }
        let stepped = scaler.step(opt).unwrap();
        scaler.update();
        opt.zero_grad();
        stepped
    };
    assert!(step(&mut opt, &mut scaler, false));
    let (before_w, before_state) = (w.to_vec_f32(), opt.state_dict());
    assert!(
        !step(&mut opt, &mut scaler, true),
        "the step with inf is skipped"
    );
    assert_eq!(
        w.to_vec_f32(),
        before_w,
        "parameters untouched, bit for bit"
    );
    assert_eq!(opt.state_dict(), before_state, "optimizer state untouched");
    assert_eq!(scaler.get_scale(), 32768.0);
    assert!(
        step(&mut opt, &mut scaler, false),
        "the next clean step runs"
    );
    assert_ne!(w.to_vec_f32(), before_w);
}

#[test]
fn two_thousand_clean_steps_double_the_scale() {
    let (_, mut opt) = adamw_setup();
    let mut scaler = GradScaler::new();
    for i in 0..2000 {
        assert_eq!(scaler.get_scale(), 65536.0, "step {i}");
        scaler.step(&mut opt).unwrap();
        scaler.update();
    }
    assert_eq!(scaler.get_scale(), 131072.0);
    assert_eq!(scaler.state_dict().growth_tracker, 0);
}

#[test]
fn unscale_twice_and_fp16_grads_fail_like_pytorch() {
    let (w, mut opt) = adamw_setup();
    let mut scaler = GradScaler::new();
    w.mul(&w).unwrap().sum().unwrap().backward().unwrap();
    scaler.unscale_(&opt).unwrap();
    assert!(
        scaler
            .unscale_(&opt)
            .unwrap_err()
            .to_string()
            .ends_with(UNSCALE_TWICE_MSG)
    );
    scaler.step(&mut opt).unwrap();
    scaler.update();
    w.set_grad(Some(Tensor::ones(&[8], DType::F16).unwrap()));
    assert!(
        scaler
            .unscale_(&opt)
            .unwrap_err()
            .to_string()
            .ends_with(FP16_GRADS_MSG)
    );
}

#[test]
fn a_shard_with_finite_gradients_skips_the_step_when_another_shard_overflowed() {
    // ZeRO: this optimizer holds one shard, its gradients finite; `agree` reports that
    // another shard's were not (an all-reduce of the flag), so the step is skipped here too
    // and the scale backs off, as PyTorch's ShardedGradScaler does.
    let (w, mut opt) = adamw_setup();
    let before = w.to_vec_f32();
    let mut scaler = GradScaler::new();
    w.mul(&w).unwrap().sum().unwrap().backward().unwrap();
    let mut asked = Vec::new();
    scaler
        .unscale_agreeing_(&opt, &mut |found| {
            asked.push(found);
            Ok(true)
        })
        .unwrap();
    assert_eq!(asked, [false], "this shard's own finding goes to `agree`");
    assert!(!scaler.step(&mut opt).unwrap(), "the step is skipped");
    scaler.update();
    assert_eq!(w.to_vec_f32(), before);
    assert_eq!(scaler.get_scale(), 32768.0, "65536 × backoff 0.5");
}

#[test]
fn accumulated_micro_batches_equal_one_big_batch() {
    // 4 micro-batches of 8 rows with loss/4 give the gradient of one batch of 32 rows.
    let x = randn(&[32, 16], 1, 1.0);
    let grads = |micro: usize, amp: bool| {
        let w = randn(&[4, 16], 2, 0.2).requires_grad_(true).unwrap();
        let mut opt =
            Sgd::new(vec![ParamGroup::new(vec![w.clone()], 0.0, 0.0)], 0.0, false).unwrap();
        let mut scaler = GradScaler::new();
        let rows = 32 / micro;
        for k in 0..micro {
            let xb = x.narrow(0, k * rows, rows).unwrap();
            let _ac = autocast(amp.then_some(DType::F16));
            let y = xb.linear(&w, None).unwrap();
            let loss = y
                .mul(&y)
                .unwrap()
                .mean()
                .unwrap()
                .mul_scalar(1.0 / micro as f64)
                .unwrap();
            scaler.scale(&loss).unwrap().backward().unwrap();
        }
        scaler.unscale_(&opt).unwrap(); // once per optimizer step, after all micro-batches
        let g = w.grad().unwrap().to_vec_f32();
        scaler.step(&mut opt).unwrap();
        g
    };
    let (one, four) = (grads(1, false), grads(4, false));
    assert_relative_eq!(one.as_slice(), four.as_slice(), max_relative = 1e-5);
    let (one16, four16) = (grads(1, true), grads(4, true));
    // f16 activations: agreement within f16 precision (2⁻¹⁰ ≈ 1e-3 relative, a few roundings).
    assert_relative_eq!(
        one16.as_slice(),
        four16.as_slice(),
        max_relative = 5e-3,
        epsilon = 1e-4
    );
    assert_relative_eq!(
        one16.as_slice(),
        one.as_slice(),
        max_relative = 2e-2,
        epsilon = 1e-3
    );
}
