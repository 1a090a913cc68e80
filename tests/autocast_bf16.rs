//! bf16 autocast against PyTorch's `torch.autocast("cpu", dtype=torch.bfloat16)`
//! (`scripts/autocast_bf16_fixture.py` → `fixtures/autocast_bf16.json`): each op returns
//! PyTorch's dtype (CPU's lists: products in bf16, losses in f32, softmax, layer norm and
//! reductions keep bf16), its value and its inputs' gradients within bf16 tolerance, and
//! gradients come back in each input's dtype (f32 master weights keep f32 gradients).

use rewind::ops::autocast::autocast;
use rewind::{DType, GeluApprox, Indices, Tensor};
use serde_json::Value;

mod common;
use common::json_floats;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/autocast_bf16.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn shape(v: &Value) -> Vec<usize> {
    common::json_numbers(v)
        .into_iter()
        .map(|x| x as usize)
        .collect()
}

fn dtype(name: &str) -> DType {
    match name {
        "torch.bfloat16" => DType::BF16,
        "torch.float32" => DType::F32,
        other => panic!("unexpected dtype {other}"),
    }
}

/// Runs the fixture's op `name` on `x` the way the script's lambda does.
fn run(name: &str, x: &[Tensor], targets: &Indices) -> Tensor {
    let r = match name {
        "linear" => x[0].linear(&x[1], Some(&x[2])),
        "matmul" => x[0].matmul(&x[1]),
        "softmax" => x[0].softmax(-1),
        "log_softmax" => x[0].log_softmax(-1),
        "layer_norm" => x[0].layer_norm(None, None, 1e-5),
        "gelu_tanh" => x[0].gelu_with(GeluApprox::Tanh),
        "silu" => x[0].silu(),
        "exp" => x[0].exp(),
        "sum" => x[0].sum(),
        "mean" => x[0].mean(),
        "add_mixed" => x[0].add(&x[1]),
        "mul_bf16" => x[0].mul(&x[1]),
        "cat_mixed" => Tensor::cat(&[&x[0], &x[1]], 0),
        "cross_entropy" => x[0].cross_entropy(targets, -100),
        other => panic!("no case for {other}"),
    };
    r.unwrap()
}

/// |got − want| ≤ ulps · 2⁻⁷ · max(|want|, floor): bf16 keeps 8 significant bits, so one
/// rounding that goes the other way is one step of 2⁻⁷ relative at most; `floor` covers values near 0 whose error
/// comes from larger terms (a sum's cancellation, a gradient's).
fn close(what: &str, got: &[f32], want: &[f32], ulps: f32, floor: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = ulps * (w.abs().max(floor)) / 128.0;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs PyTorch's {w} (tolerance {tol})"
        );
    }
}

#[test]
fn every_op_under_bf16_autocast_returns_pytorch_cpu_autocasts_dtype_value_and_gradients() {
    let fix = fixture();
    let targets = Indices::new(vec![1, 0, 5, 3], &[4]).unwrap();
    for case in fix["ops"].as_array().unwrap() {
        let name = case["op"].as_str().unwrap();
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let t = Tensor::from_vec(json_floats(&i["values"]), &shape(&i["shape"])).unwrap();
                t.to_dtype(dtype(i["dtype"].as_str().unwrap()))
                    .unwrap()
                    .requires_grad_(true)
                    .unwrap()
            })
            .collect();
        let y = {
            let _bf16 = autocast(Some(DType::BF16));
            run(name, &inputs, &targets)
        };
        assert_eq!(
            y.dtype(),
            dtype(case["dtype"].as_str().unwrap()),
            "{name}: PyTorch's output dtype"
        );
        assert_eq!(y.shape(), shape(&case["shape"]).as_slice(), "{name}");
        // Outputs: within 1 bf16 rounding of PyTorch's (the f32 inside may differ by ulps, and
        // that can move the final rounding), sums' cancellation measured against 1.0.
        close(
            name,
            &y.to_vec_f32(),
            &json_floats(&case["values"]),
            1.0,
            1.0,
        );
        let c = Tensor::from_vec(json_floats(&case["c"]), y.shape()).unwrap();
        y.to_dtype(DType::F32)
            .unwrap()
            .mul(&c)
            .unwrap()
            .sum()
            .unwrap()
            .backward()
            .unwrap();
        for (t, i) in inputs.iter().zip(case["inputs"].as_array().unwrap()) {
            let g = t.grad().unwrap();
            assert_eq!(
                g.dtype(),
                dtype(i["grad_dtype"].as_str().unwrap()),
                "{name}: the gradient of {} comes back in PyTorch's dtype",
                i["name"]
            );
            // Gradients pass a bf16 output's rounding back through the op: 2 roundings.
            close(
                &format!("{name}: d/d{}", i["name"]),
                &g.to_vec_f32(),
                &json_floats(&i["grad"]),
                2.0,
                1.0,
            );
        }
    }
}

#[test]
fn bf16_autocast_needs_no_loss_scaling_where_fp16_underflows() {
    // 1e-8 is below f16's smallest subnormal (6e-8) but far inside bf16's range (f32's
    // exponent): an unscaled bf16 gradient survives, which is why PyTorch's CPU recipe has no
    // GradScaler.
    let x = Tensor::from_vec(vec![1.0f32; 16 * 32], &[16, 32]).unwrap();
    let w = Tensor::from_vec(vec![0.01f32; 32 * 32], &[32, 32])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    {
        let _bf16 = autocast(Some(DType::BF16));
        let y = x.linear(&w, None).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        y.sum()
            .unwrap()
            .mul_scalar(1e-8)
            .unwrap()
            .backward()
            .unwrap();
    }
    let g = w.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32, "the f32 master weight's gradient");
    // dL/dW[o][i] = 1e-8 · Σ_rows x = 1.6e-7, to bf16's precision.
    for v in g.to_vec_f32() {
        assert!((v - 1.6e-7).abs() <= 1.6e-7 / 128.0, "{v}");
    }
}

/// y = x·Wᵀ under bf16 autocast, and the bytes the tape holds once the scope has ended.
fn linear_under_autocast(x: &Tensor, w: &Tensor) -> (Tensor, usize) {
    let before = rewind::tape::saved_bytes();
    let y = {
        let _bf16 = autocast(Some(DType::BF16));
        x.linear(w, None).unwrap()
    };
    (y, rewind::tape::saved_bytes() - before)
}

#[test]
fn a_weights_autocast_copy_is_remade_for_backward_not_kept_and_gradients_keep_their_bits() {
    rewind::rng::manual_seed(7);
    let (rows, din, dout) = (64, 128, 256);
    // An activation that needs a gradient, so backward needs W too (dx = g·W).
    let x0 = Tensor::randn(&[rows, din])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = x0.mul_scalar(1.0).unwrap();
    let w = Tensor::randn(&[dout, din])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    // Autocast: backward needs x and W in bf16. x's copy is held (2 bytes per element);
    // W's is a recipe — W and the dtype — so its 2·dout·din bytes are not.
    let (y, held) = linear_under_autocast(&x, &w);
    assert_eq!(held, rows * din * 2, "only x's bf16 copy is held");
    y.sum().unwrap().backward().unwrap();
    let (y_recipe, g_recipe) = (y.to_vec::<half::bf16>().unwrap(), w.grad().unwrap());
    let gx_recipe = x0.grad().unwrap().to_vec::<f32>().unwrap();
    x0.set_grad(None);
    // By hand: the same casts as tensors the tape keeps, copy and all.
    let w2 = w.detach().requires_grad_(true).unwrap();
    let before = rewind::tape::saved_bytes();
    let y2 = x0
        .mul_scalar(1.0)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .linear(&w2.to_dtype(DType::BF16).unwrap(), None)
        .unwrap();
    assert_eq!(
        rewind::tape::saved_bytes() - before,
        (rows * din + dout * din) * 2,
        "cast by hand, both copies are held"
    );
    y2.sum().unwrap().backward().unwrap();
    assert_eq!(y2.to_vec::<half::bf16>().unwrap(), y_recipe);
    assert_eq!(
        w2.grad().unwrap().to_vec::<f32>().unwrap(),
        g_recipe.to_vec::<f32>().unwrap(),
        "the remade cast gives the kept copy's gradient, bit for bit"
    );
    assert_eq!(
        x0.grad().unwrap().to_vec::<f32>().unwrap(),
        gx_recipe,
        "dx = g·W likewise"
    );
}

#[test]
fn a_weight_changed_in_place_before_backward_is_an_error_not_a_different_cast() {
    rewind::rng::manual_seed(8);
    let x0 = Tensor::randn(&[4, 8])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = x0.mul_scalar(1.0).unwrap();
    let w = Tensor::randn(&[3, 8])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let (y, _) = linear_under_autocast(&x, &w);
    w.update_data::<f32>(|v| v[0] += 1.0).unwrap();
    let err = y.sum().unwrap().backward().unwrap_err();
    assert!(err.to_string().contains("changed in place"), "{err}");
}

/// Cross-entropy of `dt` logits made by an op from an f32 leaf (so the loss is their last
/// holder), one row ignored: under autocast when `amp`, otherwise widened to f32 by hand.
/// Returns the loss, its dtype, the leaf's gradient after backward of loss·`scale`, and the
/// bytes the loss saved.
fn loss_of_half_logits(dt: DType, amp: bool, scale: f64) -> (Vec<f32>, DType, Vec<f32>, usize) {
    rewind::rng::manual_seed(11);
    let x = Tensor::randn(&[6, 1003])
        .unwrap()
        .mul_scalar(4.0)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let z = x.mul_scalar(1.0).unwrap().to_dtype(dt).unwrap();
    let targets = Indices::new(vec![3, 1002, -100, 0, 517, 64], &[6]).unwrap();
    let before = rewind::tape::saved_bytes();
    let loss = if amp {
        let _amp = autocast(Some(dt));
        z.cross_entropy(&targets, -100).unwrap()
    } else {
        let wide = z.to_dtype(DType::F32).unwrap();
        wide.cross_entropy(&targets, -100).unwrap()
    };
    let held = rewind::tape::saved_bytes() - before;
    drop(z);
    loss.mul_scalar(scale).unwrap().backward().unwrap();
    let g = x.grad().unwrap().to_vec::<f32>().unwrap();
    (loss.to_vec_f32(), loss.dtype(), g, held)
}

#[test]
fn cross_entropy_under_autocast_reads_half_logits_with_widenings_bits_and_saves_half_the_bytes() {
    // PyTorch's lists run the loss in f32: it widens the logits and saves the f32 copy. rewind
    // reads f16 and bf16 logits as they are and computes in f32 — a widening is exact, so the
    // loss and the gradient (rounded back to the logits' dtype, as the widening's backward
    // rounds it) are the same bits — and saves the logits at 2 bytes a value, not 4.
    // fp16 with a GradScaler-sized scale (2¹⁶, above f16's largest value) as well.
    for (dt, scale) in [(DType::BF16, 1.0), (DType::F16, 65536.0)] {
        let (loss, loss_dt, g, held) = loss_of_half_logits(dt, true, scale);
        let (loss_w, loss_dt_w, g_w, held_w) = loss_of_half_logits(dt, false, scale);
        assert_eq!(loss_dt, DType::F32, "{dt:?}: the loss is f32, as PyTorch's");
        assert_eq!(loss_dt_w, DType::F32);
        assert_eq!(loss[0].to_bits(), loss_w[0].to_bits(), "{dt:?}: the loss");
        assert!(g.iter().any(|&v| v != 0.0), "{dt:?}: a gradient reached x");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&g), bits(&g_w), "{dt:?}: the gradient, bit for bit");
        assert_eq!(
            held_w - held,
            6 * 1003 * 2,
            "{dt:?}: the saved logits take 2 bytes a value instead of the f32 copy's 4"
        );
    }
}
