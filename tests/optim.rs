//! Optimizers: PyTorch's update rules, bitsandbytes' 8-bit maps and quantization, exact state
//! memory, convergence of 8-bit against fp32, resuming, gradient clipping.

use approx::assert_relative_eq;
use rewind::Tensor;
use rewind::optim::quant::{CodeMap, QuantMap, dynamic_map};
use rewind::optim::{
    Adam8bitState, AdamW, AdamW8bit, BLOCK, Optimizer, ParamGroup, Sgd, clip_grad_norm_,
};

mod common;

/// A 1-D leaf holding `v` that requires grad.
fn param(v: &[f32]) -> Tensor {
    common::param(v, &[v.len()])
}

fn set_grad(p: &Tensor, g: &[f32]) {
    p.set_grad(Some(Tensor::from_vec(g.to_vec(), p.shape()).unwrap()));
}

#[test]
fn sgd_with_momentum_nesterov_and_weight_decay_follows_pytorch() {
    // w = 1, g = 0.5 each step, lr 0.1, μ 0.9, wd 0.01, Nesterov.
    // d₁ = g + wd·w; buf₁ = d₁; w ← w − lr(d₁ + μ·buf₁); d₂ = g + wd·w; buf₂ = μ·buf₁ + d₂; ...
    let p = param(&[1.0]);
    let mut opt = Sgd::new(vec![ParamGroup::new(vec![p.clone()], 0.1, 0.01)], 0.9, true).unwrap();
    let (mut w, mut buf) = (1.0f64, 0.0f64);
    for t in 0..3 {
        set_grad(&p, &[0.5]);
        opt.step().unwrap();
        let d = 0.5 + 0.01 * w;
        buf = if t == 0 { d } else { 0.9 * buf + d };
        w -= 0.1 * (d + 0.9 * buf);
    }
    assert_relative_eq!(p.to_vec_f64()[0], w, max_relative = 1e-6);
}

#[test]
fn adamw_follows_pytorch_formula() {
    // PyTorch AdamW: w ← w(1 − lr·wd); m, v EMAs; w ← w − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
    let p = param(&[0.5, -1.0]);
    let mut opt = AdamW::new(vec![ParamGroup::new(vec![p.clone()], 1e-2, 0.1)]);
    let gs = [[0.1f64, -0.2], [0.3, 0.05], [-0.4, 0.0]];
    let mut w = [0.5f64, -1.0];
    let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
    for (t, g) in gs.iter().enumerate() {
        set_grad(&p, &[g[0] as f32, g[1] as f32]);
        opt.step().unwrap();
        let t = t as i32 + 1;
        for i in 0..2 {
            w[i] *= 1.0 - 1e-2 * 0.1;
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            w[i] -= 1e-2 / (1.0 - 0.9f64.powi(t)) * m[i]
                / (v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8);
        }
    }
    assert_relative_eq!(p.to_vec_f64().as_slice(), &w[..], max_relative = 1e-5);
    // exp_avg and exp_avg_sq of 2 floats, and the f32 step count.
    assert_eq!(opt.state_bytes(), 2 * 2 * 4 + 4);
}

#[test]
fn dynamic_maps_have_bitsandbytes_properties() {
    for signed in [true, false] {
        let m = dynamic_map(signed);
        assert!(
            m.windows(2).all(|w| w[0] < w[1]),
            "256 strictly sorted values"
        );
        assert!(m.contains(&0.0) && m[255] == 1.0);
        if signed {
            assert_relative_eq!(m[0], -0.99297, epsilon = 1e-5);
            // Symmetric but for 1.0: every other positive value has its negative.
            assert!(
                m.iter()
                    .filter(|&&x| x > 0.0 && x < 1.0)
                    .all(|x| m.contains(&-x))
            );
            assert!(!m.contains(&-1.0));
        } else {
            assert_eq!(m[0], 0.0);
            assert!(m.iter().all(|&x| x >= 0.0));
        }
    }
}

#[test]
fn quantize_picks_the_nearest_code() {
    for map in [CodeMap::signed(), CodeMap::unsigned()] {
        rewind::rng::manual_seed(1);
        for u in rewind::rng::uniform_vec(20_000) {
            let x = if map.signed {
                (2.0 * u - 1.0) as f32
            } else {
                u as f32
            };
            let q = map.nearest(x);
            let best = map
                .codes
                .iter()
                .map(|c| (c - x).abs())
                .fold(f32::MAX, f32::min);
            assert!(
                (map.value(q) - x).abs() <= best + 1e-7,
                "x = {x}: code {} is not nearest",
                map.value(q)
            );
            let qs = map.quantize(x);
            if map.signed && x < 0.0 {
                assert!(
                    map.value(qs) < 0.0,
                    "a negative value never maps to code 0 or above"
                );
            }
        }
    }
}

#[test]
fn table_lookup_quantizes_exactly_like_the_search() {
    // Every code boundary (each midpoint ± a few ulps), every table bucket edge, and random
    // values: the lookup and bitsandbytes' search agree.
    for map in [CodeMap::signed(), CodeMap::unsigned()] {
        let mut xs: Vec<f32> = Vec::new();
        for w in map.codes.windows(2) {
            let mid = (w[0] + w[1]) * 0.5;
            for d in -3i32..=3 {
                xs.push(f32::from_bits((mid.to_bits() as i32 + d) as u32));
            }
        }
        for b in 0..=u16::MAX as u32 {
            xs.push(f32::from_bits(b << 16));
            xs.push(f32::from_bits((b << 16) | 0xFFFF));
        }
        rewind::rng::manual_seed(9);
        xs.extend(
            rewind::rng::uniform_vec(100_000)
                .into_iter()
                .map(|u| (2.0 * u - 1.0) as f32),
        );
        xs.extend([0.0, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE]);
        for x in xs.into_iter().filter(|x| !x.is_nan()) {
            assert_eq!(
                map.quantize(x),
                map.quantize_search(x),
                "x = {x:e} ({:#x})",
                x.to_bits()
            );
        }
    }
}

#[test]
fn blockwise_quantization_error_is_within_the_map_spacing() {
    // Dequantize(quantize(x)) differs from x by at most half the gap between the two codes
    // around x/absmax, times absmax (one more code for the sign rule).
    let map = CodeMap::signed();
    rewind::rng::manual_seed(2);
    let block: Vec<f32> = rewind::rng::normal_vec(BLOCK)
        .into_iter()
        .map(|v| (v * 0.01) as f32)
        .collect();
    let absmax = block.iter().fold(0f32, |a, x| a.max(x.abs()));
    for &x in &block {
        let n = x / absmax;
        let q = map.quantize(n);
        let back = map.value(q) * absmax;
        let i = map.codes.partition_point(|&c| c < n).clamp(1, 255);
        let gap = (map.codes[i] - map.codes[i - 1]).max(map.codes[(i + 1).min(255)] - map.codes[i]);
        assert!(
            (back - x).abs() <= gap * absmax + 1e-9,
            "x = {x}, back = {back}"
        );
    }
}

#[test]
fn state_memory_is_two_bytes_per_param_plus_eight_per_block() {
    let big = param(&vec![0.1; 10_000]);
    let small = param(&vec![0.1; 4095]);
    let mut opt = AdamW8bit::new(vec![ParamGroup::new(
        vec![big.clone(), small.clone()],
        1e-3,
        0.0,
    )]);
    set_grad(&big, &vec![0.01; 10_000]);
    set_grad(&small, &vec![0.01; 4095]);
    opt.step().unwrap();
    let blocks = 10_000usize.div_ceil(256);
    assert!(matches!(
        opt.state(0),
        Some(Adam8bitState::Blockwise { .. })
    ));
    assert!(
        matches!(opt.state(1), Some(Adam8bitState::Fp32 { .. })),
        "under 4096 elements: fp32 state"
    );
    assert_eq!(opt.state(0).unwrap().bytes(), 2 * 10_000 + 8 * blocks);
    // Two 8-bit codes and the absmaxes; fp32 m and v; an f32 step count each.
    assert_eq!(
        opt.state_bytes(),
        2 * 10_000 + 8 * blocks + 8 * 4095 + 2 * 4
    );
    // fp32 AdamW would hold 8 bytes per parameter: 8-bit saves ≥ 74% on the big tensor.
    assert!((opt.state(0).unwrap().bytes() as f64) < 0.26 * (8 * 10_000) as f64);
}

#[test]
fn non_finite_gradient_element_zeroes_its_state_and_spares_its_parameter() {
    let p = param(&vec![1.0; 4096]);
    let mut opt = AdamW8bit::new(vec![ParamGroup::new(vec![p.clone()], 1e-2, 0.0)]);
    let mut g = vec![0.5f32; 4096];
    set_grad(&p, &g);
    opt.step().unwrap();
    g[5] = f32::NAN;
    g[300] = f32::INFINITY;
    set_grad(&p, &g);
    let before = p.to_vec_f32();
    opt.step().unwrap();
    let after = p.to_vec_f32();
    assert_eq!((after[5], after[300]), (before[5], before[300]));
    assert!(after[6] < before[6]);
    let Some(Adam8bitState::Blockwise { m, v, .. }) = opt.state(0) else {
        panic!("blockwise state")
    };
    let (qm, qv) = (CodeMap::signed(), CodeMap::unsigned());
    assert_eq!(
        (
            qm.value(m[5]),
            qv.value(v[5]),
            qm.value(m[300]),
            qv.value(v[300])
        ),
        (0.0, 0.0, 0.0, 0.0)
    );
}

/// Noisy least squares y = X·w* + 0.5·ε with 64 features (the best loss is about the noise
/// variance, not zero): loss curve of an optimizer over `steps`.
fn fit(make: impl Fn(Vec<ParamGroup>) -> Box<dyn Optimizer>, steps: usize) -> Vec<f64> {
    rewind::rng::manual_seed(5);
    let (n, d) = (256, 64);
    let x = Tensor::randn(&[n, d]).unwrap();
    let w_true = Tensor::randn(&[64, d]).unwrap();
    let noise = Tensor::from_vec(
        rewind::rng::normal_vec(n * 64)
            .into_iter()
            .map(|v| (0.5 * v) as f32)
            .collect(),
        &[n, 64],
    )
    .unwrap();
    let y = rewind::no_grad(|| x.linear(&w_true, None)?.add(&noise)).unwrap();
    let w = Tensor::zeros(&[64, d], rewind::DType::F32)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let mut opt = make(vec![ParamGroup::new(vec![w.clone()], 0.05, 0.0)]);
    (0..steps)
        .map(|_| {
            let r = x.linear(&w, None).unwrap().sub(&y).unwrap();
            let loss = r.mul(&r).unwrap().mean().unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
            loss.item().unwrap()
        })
        .collect()
}

#[test]
fn eight_bit_adamw_tracks_fp32_adamw_and_both_converge() {
    let fp32 = fit(|g| Box::new(AdamW::new(g)), 300);
    let q8 = fit(|g| Box::new(AdamW8bit::new(g)), 300);
    assert!(
        fp32[299] < 0.01 * fp32[0] && q8[299] < 0.01 * q8[0],
        "both converge: {} → {}, {} → {}",
        fp32[0],
        fp32[299],
        q8[0],
        q8[299]
    );
    // Along the way the losses stay within a few percent of each other.
    for t in [0, 10, 25, 50, 100, 150, 200, 250, 299] {
        eprintln!("t={t}: fp32 {:.5} 8bit {:.5}", fp32[t], q8[t]);
    }
    for t in [50, 100, 200, 299] {
        assert_relative_eq!(q8[t], fp32[t], max_relative = 0.05);
    }
}

#[test]
fn eight_bit_state_split_at_block_boundaries_equals_the_whole_tensors() {
    // ZeRO-1 trains a tensor as slices cut at multiples of 256 elements: each slice keeps the
    // whole tensor's kind of state (8-bit here, though a slice is under 4096 elements), its
    // blocks are the whole tensor's blocks, so parameters and codes are bit-identical.
    let n = 5000;
    let w0: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
        .collect();
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|s| {
            (0..n)
                .map(|i| ((i * 13 + s * 7) % 29) as f32 * 1e-2 - 0.14)
                .collect()
        })
        .collect();
    let whole = param(&w0);
    let mut one = AdamW8bit::new(vec![ParamGroup::new(vec![whole.clone()], 1e-3, 0.01)]);
    let cuts = [0, 2048, 4096, n];
    let pieces: Vec<Tensor> = cuts.windows(2).map(|c| param(&w0[c[0]..c[1]])).collect();
    let mut split = AdamW8bit::new(vec![ParamGroup::new(pieces.clone(), 1e-3, 0.01)]);
    for i in 0..pieces.len() {
        split.set_blockwise(i, true).unwrap();
    }
    for g in &grads {
        set_grad(&whole, g);
        for (p, c) in pieces.iter().zip(cuts.windows(2)) {
            set_grad(p, &g[c[0]..c[1]]);
        }
        one.step().unwrap();
        split.step().unwrap();
    }
    let joined: Vec<f32> = pieces.iter().flat_map(|p| p.to_vec_f32()).collect();
    assert_eq!(joined, whole.to_vec_f32());
    let Some(Adam8bitState::Blockwise { m, absmax_m, .. }) = one.state(0) else {
        panic!("5000 elements keep 8-bit state");
    };
    let (mut codes, mut absmax) = (Vec::new(), Vec::new());
    for i in 0..pieces.len() {
        let Some(Adam8bitState::Blockwise { m, absmax_m, .. }) = split.state(i) else {
            panic!("piece {i} keeps its tensor's 8-bit state");
        };
        codes.extend_from_slice(m);
        absmax.extend_from_slice(absmax_m);
    }
    assert_eq!(&codes, m);
    assert_eq!(&absmax, absmax_m);
    // Once stepped, a parameter's kind of state is fixed.
    assert!(split.set_blockwise(0, false).is_err());
}

#[test]
fn resuming_from_a_state_dict_is_bit_exact() {
    let run = |split: bool| {
        let p = param(
            &(0..5000)
                .map(|i| (i as f32 * 0.001).sin())
                .collect::<Vec<_>>(),
        );
        let mut opt = AdamW8bit::new(vec![ParamGroup::new(vec![p.clone()], 1e-2, 0.01)]);
        for t in 0..6 {
            if split && t == 3 {
                let state = opt.state_dict();
                opt = AdamW8bit::new(vec![ParamGroup::new(vec![p.clone()], 1e-2, 0.01)]);
                opt.load_state_dict(state).unwrap();
            }
            set_grad(
                &p,
                &(0..5000)
                    .map(|i| ((i + t) as f32 * 0.01).cos())
                    .collect::<Vec<_>>(),
            );
            opt.step().unwrap();
        }
        p.to_vec_f32()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn clip_grad_norm_scales_to_max_norm_and_returns_the_total() {
    // grads (3, 4) and (12): total norm 13; max 6.5 → every grad × 0.5.
    let a = param(&[0.0, 0.0]);
    let b = param(&[0.0]);
    set_grad(&a, &[3.0, 4.0]);
    set_grad(&b, &[12.0]);
    let total = clip_grad_norm_(&[a.clone(), b.clone()], 6.5).unwrap();
    let clipped = a.grad().unwrap().to_vec_f32();
    assert_relative_eq!(total, 13.0);
    assert_relative_eq!(
        a.grad().unwrap().to_vec_f32().as_slice(),
        &[1.5f32, 2.0][..],
        max_relative = 1e-6
    );
    assert_relative_eq!(b.grad().unwrap().to_vec_f32()[0], 6.0, max_relative = 1e-6);
    assert_relative_eq!(
        clip_grad_norm_(std::slice::from_ref(&a), 100.0).unwrap(),
        2.5,
        max_relative = 1e-6
    );
    assert_eq!(
        a.grad().unwrap().to_vec_f32(),
        clipped,
        "under the limit nothing changes"
    );
}

#[test]
fn step_table_quantizes_like_the_search_across_every_range() {
    // Every 16-bit prefix range of [−1.0078, 1.0078], swept with a stride of 61 low values
    // (both ends included), plus non-finite and out-of-range values, which take the search.
    for map in [CodeMap::signed(), CodeMap::unsigned()] {
        for sign in [0u32, 0x8000] {
            for prefix in 0..=0x3F80u32 {
                for low in (0..=0xFFFFu32).step_by(61).chain([0xFFFF]) {
                    let x = f32::from_bits(((sign | prefix) << 16) | low);
                    assert_eq!(map.quantize(x), map.quantize_search(x), "x = {x:e}");
                }
            }
        }
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.5,
            -3.0,
            1.0000001,
        ] {
            assert_eq!(map.quantize(x), map.quantize_search(x), "x = {x:e}");
        }
    }
}

#[test]
#[cfg_attr(
    not(host_avx2_fma),
    ignore = "needs a CPU with AVX2+FMA: without them both runs take the scalar path"
)]
fn vectorised_8bit_step_is_bit_identical_to_the_scalar_reference() {
    // 5,000 elements: 19 full blocks and a 136-element tail; gradients span 12 decades and
    // include zeros, ±inf, NaN and values whose square overflows (v = inf, a NaN ratio).
    assert!(
        QuantMap::signed().vectorised(),
        "AVX2+FMA detected at build time but not now"
    );
    let n = 5_000;
    let run = |vectorised: bool| {
        rewind::rng::manual_seed(31);
        let init: Vec<f32> = rewind::rng::normal_vec(n)
            .iter()
            .map(|&x| x as f32)
            .collect();
        let w = rewind::Tensor::from_vec(init, &[n])
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let mut opt = AdamW8bit::new(vec![ParamGroup::new(vec![w.clone()], 1e-2, 0.1)]);
        opt.vectorised = vectorised;
        for step in 0..6 {
            let mut g: Vec<f32> = rewind::rng::normal_vec(n)
                .iter()
                .enumerate()
                .map(|(i, x)| (x * 10f64.powi((i % 13) as i32 - 8)) as f32)
                .collect();
            g[7 * step] = 0.0;
            g[100 + step] = f32::INFINITY;
            g[200] = f32::NAN;
            g[300 + step] = if step == 2 { 3e19 } else { -1e-30 };
            w.set_grad(Some(rewind::Tensor::from_vec(g, &[n]).unwrap()));
            opt.step().unwrap();
        }
        let bits = common::bits(&w);
        (bits, opt.state_dict())
    };
    let (fast, fast_state) = run(true);
    let (reference, reference_state) = run(false);
    assert!(fast == reference, "parameters differ");
    assert!(fast_state == reference_state, "codes or absmax differ");
}

#[test]
#[cfg_attr(
    not(host_avx2_fma),
    ignore = "needs a CPU with AVX2+FMA: without them quantize_slice is the step table itself"
)]
fn lookup_free_quantizer_agrees_with_the_step_table_on_every_f32() {
    // All 2³² bit patterns (±0, subnormals, every normal, ±inf, every NaN): the vector path
    // computes codes arithmetically and sends lanes near a boundary to the table, so any flaw
    // in its constants or its boundary margin shows up as a differing code. Every 4,099th
    // value is also checked against the search itself.
    use rayon::prelude::*;
    for map in [QuantMap::signed(), QuantMap::unsigned()] {
        assert!(
            map.vectorised(),
            "AVX2+FMA detected at build time but not now"
        );
        let bad = (0u32..1 << 16)
            .into_par_iter()
            .map_init(
                || (vec![0f32; 1 << 16], vec![0u8; 1 << 16]),
                |(xs, codes), hi| {
                    for (low, x) in xs.iter_mut().enumerate() {
                        *x = f32::from_bits(hi << 16 | low as u32);
                    }
                    map.quantize_slice(xs, codes).unwrap();
                    let mut wrong = 0;
                    for (i, (&x, &q)) in xs.iter().zip(codes.iter()).enumerate() {
                        let expected = map.table().quantize(x);
                        if (hi as usize * 65_536 + i).is_multiple_of(4_099) {
                            assert_eq!(expected, map.table().quantize_search(x), "x = {x:e}");
                        }
                        wrong += usize::from(q != expected);
                    }
                    wrong
                },
            )
            .sum::<usize>();
        assert_eq!(bad, 0, "signed = {}: codes differ", map.table().signed);
    }
}

#[test]
fn lookup_free_dequantizer_reproduces_every_code_value() {
    // value = (18j − 16p + 9) / D, one correctly rounded division: bit-identical to the map.
    for map in [QuantMap::signed(), QuantMap::unsigned()] {
        let codes: Vec<u8> = (0..=255).collect();
        let mut values = vec![f32::NAN; 256];
        map.dequantize_slice(&codes, &mut values).unwrap();
        for (c, v) in values.iter().enumerate() {
            assert_eq!(v.to_bits(), map.codes()[c].to_bits(), "code {c}");
        }
    }
}

#[test]
fn slice_quantizer_handles_any_length_and_refuses_mismatched_buffers() {
    let map = QuantMap::signed();
    let xs: Vec<f32> = (0..21).map(|i| (i as f32 - 10.0) / 10.0).collect();
    let mut codes = vec![0u8; 21];
    map.quantize_slice(&xs, &mut codes).unwrap();
    let expected: Vec<u8> = xs.iter().map(|&x| map.table().quantize_search(x)).collect();
    assert_eq!(codes, expected);
    let mut back = vec![0f32; 21];
    map.dequantize_slice(&codes, &mut back).unwrap();
    assert_eq!(
        back,
        codes
            .iter()
            .map(|&c| map.table().value(c))
            .collect::<Vec<_>>()
    );
    let err = map.quantize_slice(&xs, &mut codes[..20]).unwrap_err();
    assert!(matches!(
        err,
        rewind::Error::ShapeMismatch {
            op: "quantize_slice",
            ..
        }
    ));
    let err = map.dequantize_slice(&codes, &mut back[..3]).unwrap_err();
    assert!(matches!(
        err,
        rewind::Error::ShapeMismatch {
            op: "dequantize_slice",
            ..
        }
    ));
}

#[test]
fn loading_a_state_of_the_wrong_shape_is_an_error_not_a_truncation() {
    use rewind::optim::{OptimState, StateBuffer};
    let p = param(&[1.0; 5000]);
    p.set_grad(Some(Tensor::from_vec(vec![0.1f32; 5000], &[5000]).unwrap()));
    let opts: Vec<Box<dyn Optimizer>> = vec![
        Box::new(AdamW::new(vec![ParamGroup::new(
            vec![p.clone()],
            1e-3,
            0.0,
        )])),
        Box::new(AdamW8bit::new(vec![ParamGroup::new(
            vec![p.clone()],
            1e-3,
            0.0,
        )])),
        Box::new(
            Sgd::new(
                vec![ParamGroup::new(vec![p.clone()], 1e-3, 0.0)],
                0.9,
                false,
            )
            .unwrap(),
        ),
    ];
    for mut opt in opts {
        opt.step().unwrap();
        let good = opt.state_dict();
        let mut short = good.clone();
        match &mut short.buffers[0][0].1 {
            StateBuffer::F32(v) => {
                v.pop();
            }
            StateBuffer::U8(v) => {
                v.pop();
            }
        }
        let err = opt.load_state_dict(short).unwrap_err().to_string();
        assert!(
            err.contains("holds 4999 values, the parameter needs 5000"),
            "{err}"
        );
        let mut odd = good.clone();
        odd.buffers[0].truncate(1);
        if odd.buffers[0].len() != good.buffers[0].len() {
            let err = opt.load_state_dict(odd).unwrap_err().to_string();
            assert!(err.contains("unrecognised state layout"), "{err}");
        }
        let two = OptimState {
            step: 1,
            buffers: vec![Vec::new(), Vec::new()],
        };
        let err = opt.load_state_dict(two).unwrap_err().to_string();
        assert!(
            err.contains("state has 2 parameters, the optimizer 1"),
            "{err}"
        );
        opt.load_state_dict(good).unwrap();
    }
}

#[test]
fn state_bytes_count_what_state_dict_holds_without_copying_it() {
    // One parameter steps (a big one: 8-bit blockwise state), one never gets a gradient (no
    // state), one small (fp32 state under AdamW8bit): each optimizer's count equals the bytes
    // of its state_dict, step counts included.
    let make = || {
        let ps = [param(&[0.5; 5000]), param(&[1.0; 7]), param(&[-0.5; 300])];
        set_grad(&ps[0], &[0.01; 5000]);
        set_grad(&ps[2], &[-0.02; 300]);
        vec![ParamGroup::new(ps.to_vec(), 1e-3, 0.01)]
    };
    let opts: [(&str, Box<dyn Optimizer>); 3] = [
        ("AdamW", Box::new(AdamW::new(make()))),
        ("AdamW8bit", Box::new(AdamW8bit::new(make()))),
        ("Sgd", Box::new(Sgd::new(make(), 0.9, false).unwrap())),
    ];
    for (name, mut opt) in opts {
        assert_eq!(opt.state_bytes(), 0, "{name} before a step");
        opt.step().unwrap();
        opt.step().unwrap();
        let held: usize = opt
            .state_dict()
            .buffers
            .iter()
            .flatten()
            .map(|(_, b)| b.bytes())
            .sum();
        assert!(held >= 4 * 300, "{name}: {held} bytes");
        assert_eq!(opt.state_bytes(), held, "{name}");
    }
}
