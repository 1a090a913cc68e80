//! The ops of the Llama, Qwen2 and GLM families — RMSNorm, SiLU, rotary embeddings in halves
//! and in interleaved pairs (partial rotary dims, explicit positions), grouped-query causal
//! attention with left padding, embedding with `padding_idx` — against central differences in
//! f64, and against transformers 5.25's own functions (`scripts/family_ops_reference.py` →
//! `tests/fixtures/family_ops.json`) in f32; the attention's fused scale-mask-softmax against
//! the unfused chain, bit for bit in f32 and f16.

mod common;
use common::json_floats;

use common::uniform_f64 as rand;
use rewind::gradcheck::{GradcheckOptions, gradcheck};
use rewind::nn::attention::causal_attention;
use rewind::ops::rope::{Rope, RopeLayout};
use rewind::{Indices, Result, Tensor};
use serde_json::Value;

fn check(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let r = gradcheck(f, inputs, GradcheckOptions::default()).unwrap();
    assert!(r.passed, "{name}: {:?}", r.worst);
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/family_ops.json")).unwrap()
}

/// sin(0.37·i + phase)·scale rounded to f32, as the script builds its inputs.
fn wave(shape: &[usize], phase: f64, scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((0.37 * i as f64 + phase).sin() * scale) as f32)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Every element within `tol` of the reference's largest magnitude.
fn close(what: &str, got: &Tensor, want: &Value, tol: f32) {
    let (got, want) = (got.to_vec_f32(), json_floats(want));
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= tol * scale,
            "{what}[{i}]: {a} vs transformers' {b} (scale {scale})"
        );
    }
}

/// Runs `f` on `inputs` made trainable, backpropagates `g`, and returns y and the gradients.
fn run(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    g: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let xs: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.requires_grad_(true).unwrap())
        .collect();
    let y = f(&xs).unwrap();
    y.backward_with(Some(g), Default::default()).unwrap();
    let grads = xs.iter().map(|x| x.grad().unwrap()).collect();
    (y, grads)
}

#[test]
fn rms_norm_matches_transformers_and_central_differences() {
    let f = &fixture()["rms_norm"];
    let w = Tensor::from_vec(
        wave(&[8], 0.7, 0.5)
            .to_vec_f32()
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<f32>>(),
        &[8],
    )
    .unwrap();
    let (y, g) = run(
        |t| t[0].rms_norm(&t[1], 1e-6),
        &[wave(&[3, 8], 0.1, 2.0), w],
        &wave(&[3, 8], 1.3, 1.0),
    );
    close("rms_norm y", &y, &f["y"], 1e-6);
    close("rms_norm dx", &g[0], &f["dx"], 1e-5);
    close("rms_norm dw", &g[1], &f["dw"], 1e-5);
    check(
        "rms_norm",
        |t| t[0].rms_norm(&t[1], 1e-6),
        &[rand(&[4, 6], -2.0, 2.0, 1), rand(&[6], 0.5, 1.5, 2)],
    );
}

#[test]
fn silu_matches_pytorch_and_central_differences() {
    let f = &fixture()["silu"];
    let (y, g) = run(
        |t| t[0].silu(),
        &[wave(&[2, 7], 0.2, 4.0)],
        &wave(&[2, 7], 0.9, 1.0),
    );
    // The kernels' exp is within 2 ulps of the true one.
    close("silu y", &y, &f["y"], 2e-6);
    close("silu dx", &g[0], &f["dx"], 2e-6);
    check("silu", |t| t[0].silu(), &[rand(&[3, 5], -6.0, 6.0, 3)]);
}

#[test]
fn rotary_embedding_in_halves_matches_llama_at_explicit_positions() {
    let f = &fixture()["rope_halves"];
    let rope = Rope::new(10000.0, 8, RopeLayout::Halves).unwrap();
    let pos = Indices::new(ints(&f["positions"]), &[2, 5]).unwrap();
    let (y, g) = run(
        |t| t[0].rope(&rope, &pos),
        &[wave(&[2, 2, 5, 8], 0.3, 1.0)],
        &wave(&[2, 2, 5, 8], 1.7, 1.0),
    );
    close("rope halves y", &y, &f["y"], 1e-6);
    // The backward is the turn by −θ.
    close("rope halves dx", &g[0], &f["dx"], 1e-6);
    check(
        "rope halves",
        |t| t[0].rope(&rope, &pos),
        &[rand(&[2, 2, 5, 8], -1.0, 1.0, 4)],
    );
}

#[test]
fn rotary_embedding_in_interleaved_pairs_on_half_the_head_matches_glm() {
    let f = &fixture()["rope_interleaved"];
    // partial_rotary_factor 0.5: 4 of 8 dims turn, the other 4 pass through.
    let rope = Rope::new(10000.0, 4, RopeLayout::Interleaved).unwrap();
    let pos = Indices::new(ints(&f["positions"]), &[4]).unwrap();
    let (y, g) = run(
        |t| t[0].rope(&rope, &pos),
        &[wave(&[1, 2, 4, 8], 0.5, 1.0)],
        &wave(&[1, 2, 4, 8], 2.1, 1.0),
    );
    close("rope interleaved y", &y, &f["y"], 1e-6);
    close("rope interleaved dx", &g[0], &f["dx"], 1e-6);
    check(
        "rope interleaved",
        |t| t[0].rope(&rope, &pos),
        &[rand(&[1, 2, 4, 8], -1.0, 1.0, 5)],
    );
    assert!(
        Rope::new(10000.0, 3, RopeLayout::Halves).is_err(),
        "an odd rotary dim is refused"
    );
    assert!(
        wave(&[1, 1, 4, 2], 0.0, 1.0).rope(&rope, &pos).is_err(),
        "4 rotary dims do not fit a head of 2"
    );
}

#[test]
fn grouped_query_attention_with_left_padding_matches_transformers_without_nan() {
    let f = &fixture()["gqa_attention"];
    let (b, h, kvh, t, d) = (2, 4, 2, 5, 8);
    let mask = Tensor::from_vec(json_floats(&f["key_mask"]), &[b, 1, 1, t]).unwrap();
    let attn = |x: &[Tensor]| causal_attention(&x[0], &x[1], &x[2], Some(&mask));
    let (y, g) = run(
        attn,
        &[
            wave(&[b, h, t, d], 0.4, 1.0),
            wave(&[b, kvh, t, d], 1.1, 1.0),
            wave(&[b, kvh, t, d], 2.3, 1.0),
        ],
        &wave(&[b, t, h * d], 0.6, 1.0),
    );
    assert!(y.to_vec_f32().iter().all(|v| v.is_finite()), "no NaN row");
    close("attention y", &y, &f["y"], 1e-5);
    close("attention dq", &g[0], &f["dq"], 1e-5);
    // Each shared head's gradient sums its group's.
    close("attention dk", &g[1], &f["dk"], 1e-5);
    close("attention dv", &g[2], &f["dv"], 1e-5);
    let small = Tensor::from_vec(vec![0.0f64, 1.0, 0.0], &[1, 1, 1, 3]).unwrap();
    check(
        "grouped-query attention",
        |x| causal_attention(&x[0], &x[1], &x[2], Some(&small)),
        &[
            rand(&[1, 4, 3, 2], -1.0, 1.0, 6),
            rand(&[1, 2, 3, 2], -1.0, 1.0, 7),
            rand(&[1, 2, 3, 2], -1.0, 1.0, 8),
        ],
    );
    check(
        "repeat_heads",
        |x| x[0].repeat_heads(3),
        &[rand(&[2, 2, 3, 2], -1.0, 1.0, 9)],
    );
}

#[test]
fn embedding_padding_row_gets_no_gradient_as_in_pytorch() {
    let f = &fixture()["embedding_padding"];
    let ids = Indices::new(ints(&f["ids"]), &[2, 3]).unwrap();
    let (y, g) = run(
        |t| t[0].embedding_padded(&ids, Some(2)),
        &[wave(&[6, 3], 0.8, 1.0)],
        &wave(&[2, 3, 3], 1.9, 1.0),
    );
    close("embedding y", &y, &f["y"], 0.0);
    close("embedding dW", &g[0], &f["dw"], 1e-7);
    assert_eq!(&g[0].to_vec_f32()[6..9], &[0.0; 3], "padding row 2");
    assert!(
        wave(&[6, 3], 0.0, 1.0)
            .embedding_padded(&ids, Some(6))
            .is_err()
    );
}

/// transformers' unfused chain: scores·scale + the additive mask (0 or the dtype's lowest), then
/// a softmax widened to f32 for f16 scores.
fn unfused(x: &Tensor, scale: f64, padded: &[bool]) -> Tensor {
    let (b, t) = (x.shape()[0], x.shape()[2]);
    let low = match x.dtype() {
        rewind::DType::F16 => -65504.0,
        rewind::DType::BF16 => half::bf16::MIN.to_f64(),
        rewind::DType::F32 => f64::from(f32::MIN),
        rewind::DType::F64 => f64::MIN,
    };
    let mask: Vec<f64> = (0..b * t * t)
        .map(|e| {
            let (r, i, j) = (e / (t * t), e / t % t, e % t);
            if j > i || padded[r * t + j] { low } else { 0.0 }
        })
        .collect();
    let mask = Tensor::from_vec(mask, &[b, 1, t, t])
        .unwrap()
        .to_dtype(x.dtype())
        .unwrap();
    let z = x.mul_scalar(scale).unwrap().add(&mask).unwrap();
    let z = if x.dtype() == rewind::DType::F16 {
        z.to_dtype(rewind::DType::F32).unwrap()
    } else {
        z
    };
    z.softmax(-1).unwrap()
}

#[test]
fn the_fused_attention_softmax_is_the_unfused_chain_bit_for_bit() {
    // Row 0 left-padded by 2 (its first query sees no key: a uniform row, no NaN).
    let (b, h, t) = (2, 3, 6);
    let padded: Vec<bool> = (0..b * t).map(|e| e / t == 0 && e % t < 2).collect();
    let key_mask: Vec<f32> = padded.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
    let key_mask = Tensor::from_vec(key_mask, &[b, 1, 1, t]).unwrap();
    let scale = 1.0 / 8f64.sqrt();
    for dtype in [rewind::DType::F32, rewind::DType::F16] {
        let x = wave(&[b, h, t, t], 0.3, 7.0).to_dtype(dtype).unwrap();
        let g = wave(&[b, h, t, t], 1.7, 1.0);
        let grads = |fused: bool| {
            let x = x.detach().requires_grad_(true).unwrap();
            let y = if fused {
                x.attention_softmax(scale, Some(&key_mask)).unwrap()
            } else {
                unfused(&x, scale, &padded)
            };
            y.backward_with(Some(&g), Default::default()).unwrap();
            (y.to_vec_f64(), x.grad().unwrap().to_vec_f64(), y.dtype())
        };
        let (fused, plain) = (grads(true), grads(false));
        assert_eq!(
            fused.2,
            rewind::DType::F32,
            "{dtype:?} scores give f32 probabilities"
        );
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused.0), bits(&plain.0), "{dtype:?} probabilities");
        assert_eq!(bits(&fused.1), bits(&plain.1), "{dtype:?} gradients");
        assert!(fused.0.iter().all(|v| v.is_finite()));
    }
    // Key 1 hidden (a query that sees no key has transformers' gradient, not the finite
    // difference's zero).
    let small = Tensor::from_vec(vec![0.0f64, 1.0, 0.0], &[1, 1, 1, 3]).unwrap();
    check(
        "attention_softmax",
        |x| x[0].attention_softmax(0.5, Some(&small)),
        &[rand(&[1, 2, 3, 3], -1.0, 1.0, 10)],
    );
}

#[test]
fn long_sequences_attend_in_query_blocks_with_the_unblocked_result() {
    // T = 160 > 64: queries go in blocks of 64, 64 and 32 that meet only the keys they may see
    // (the first keeps all 160: a left-padded row's first queries see no unpadded key).
    // Against the whole square of scores (grouped product, fused softmax), in f64: the same
    // values and gradients up to summation order (1e-12 of the largest).
    let (b, h, kvh, t, d) = (2, 4, 2, 160, 8);
    let key_mask: Vec<f32> = (0..b * t)
        .map(|e| if e / t == 1 && e % t < 3 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(key_mask, &[b, 1, 1, t]).unwrap();
    let whole = |x: &[Tensor]| -> Result<Tensor> {
        let g = h / kvh;
        let scores = x[0]
            .reshape(&[b, kvh, g * t, d])?
            .matmul(&x[1].transpose(-1, -2)?)?
            .reshape(&[b, h, t, t])?;
        scores
            .attention_softmax(1.0 / (d as f64).sqrt(), Some(&mask))?
            .reshape(&[b, kvh, g * t, t])?
            .matmul(&x[2])?
            .reshape(&[b, h, t, d])?
            .permute(&[0, 2, 1, 3])?
            .reshape(&[b, t, h * d])
    };
    let blocked = |x: &[Tensor]| causal_attention(&x[0], &x[1], &x[2], Some(&mask));
    let f64_wave = |shape: &[usize], phase| {
        wave(shape, phase, 1.0)
            .to_dtype(rewind::DType::F64)
            .unwrap()
    };
    let inputs = [
        f64_wave(&[b, h, t, d], 0.4),
        f64_wave(&[b, kvh, t, d], 1.1),
        f64_wave(&[b, kvh, t, d], 2.3),
    ];
    let g = f64_wave(&[b, t, h * d], 0.6);
    let fresh = || inputs.iter().map(Tensor::detach).collect::<Vec<_>>();
    let (y0, g0) = run(whole, &fresh(), &g);
    let (y1, g1) = run(blocked, &fresh(), &g);
    let near = |what: &str, a: &Tensor, b: &Tensor| {
        let (a, b) = (a.to_vec_f64(), b.to_vec_f64());
        let scale = a.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                x.is_finite() && (x - y).abs() <= 1e-12 * scale,
                "{what}[{i}]: {x} vs {y}"
            );
        }
    };
    near("y", &y0, &y1);
    for (i, (a, c)) in g0.iter().zip(&g1).enumerate() {
        near(&format!("grad {i}"), a, c);
    }
    let small = Tensor::from_vec(vec![0.0f64; 66], &[1, 1, 1, 66]).unwrap();
    check(
        "blocked attention",
        |x| causal_attention(&x[0], &x[1], &x[2], Some(&small)),
        &[
            rand(&[1, 2, 66, 2], -1.0, 1.0, 11),
            rand(&[1, 1, 66, 2], -1.0, 1.0, 12),
            rand(&[1, 1, 66, 2], -1.0, 1.0, 13),
        ],
    );
}

#[test]
fn rms_norm_keeps_its_bits_on_any_thread_count() {
    // Rows go in parallel blocks fixed by the width; the weight gradient's partial sums are
    // added in block order, so neither output depends on how many threads ran them.
    // 300 rows of 768 cross several 21-row blocks. (Tensors stay on the thread that made
    // them: each run builds its own inside the pool.)
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let x = wave(&[300, 768], 0.3, 2.0).requires_grad_(true).unwrap();
            let w = wave(&[768], 1.1, 1.0).requires_grad_(true).unwrap();
            let g = wave(&[300, 768], 2.2, 1.0);
            let y = x.rms_norm(&w, 1e-6).unwrap();
            y.backward_with(Some(&g), Default::default()).unwrap();
            let bits = |t: &Tensor| {
                t.to_vec_f32()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            (bits(&y), bits(&x.grad().unwrap()), bits(&w.grad().unwrap()))
        })
    };
    let one = run(1);
    assert!(one == run(2), "2 threads");
    assert!(one == run(3), "3 threads");
}

#[test]
fn attention_is_two_fused_ops_outside_autocast_and_per_block_products_under_it() {
    use rewind::ops::autocast::autocast;
    use rewind::{DType, tape};
    // 130 queries: blocks of 64 (keys 0..64), 64 (keys 0..128) and 2 (keys 0..130), so the
    // packed probabilities hold 64·64 + 64·128 + 2·130 = 12,548 per head — not 130².
    let (h, kvh, t, d) = (2, 1, 130, 4);
    let leaf = |s: &[usize], phase| wave(s, phase, 1.0).requires_grad_(true).unwrap();
    let (q, k, v) = (
        leaf(&[1, h, t, d], 0.1),
        leaf(&[1, kvh, t, d], 0.2),
        leaf(&[1, kvh, t, d], 0.3),
    );
    tape::clear();
    let y = causal_attention(&q, &k, &v, None).unwrap();
    let e = tape::entries();
    let ops: Vec<&str> = e.iter().map(|e| e.op).collect();
    assert_eq!(ops, ["attention_probs", "attention_context"]);
    assert_eq!(e[0].output_shape, [1, h, 12_548]);
    assert_eq!(y.shape(), [1, t, h * d]);
    // Under autocast the products are autocast's f16 matmuls around the fused softmax.
    tape::clear();
    let _fp16 = autocast(Some(DType::F16));
    let y16 = causal_attention(&q, &k, &v, None).unwrap();
    let ops: Vec<&str> = tape::entries().iter().map(|e| e.op).collect();
    assert!(
        ops.contains(&"matmul") && ops.contains(&"attention_softmax"),
        "{ops:?}"
    );
    assert!(!ops.contains(&"attention_probs"), "{ops:?}");
    // Both are the same attention, up to f16's rounding of the products' inputs.
    for (a, b) in y.to_vec_f32().iter().zip(y16.to_vec_f32()) {
        assert!((a - b).abs() <= 1e-2, "{a} vs {b}");
    }
}
