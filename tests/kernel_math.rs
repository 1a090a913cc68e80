//! The f32 kernels' fast transcendental functions against f64 references, and f16 elementwise
//! kernels rounding once from f32.

use rewind::dtype::{fast_erf, fast_exp, fast_tanh};

fn grid() -> impl Iterator<Item = f32> {
    (-200_000..=200_000).map(|i| i as f32 * 5e-5)
}

#[test]
fn fast_erf_is_within_5e7_of_erf() {
    // The rational approximations are good to a few f32 ulps: ≤ 5e-7 absolute (values in [−1, 1]).
    let worst = grid()
        .map(|x| (fast_erf(x) as f64 - libm::erf(x as f64)).abs())
        .fold(0.0, f64::max);
    assert!(worst < 5e-7, "max |fast_erf − erf| = {worst:e}");
    assert!(
        (fast_erf(100.0) - 1.0).abs() <= f32::EPSILON,
        "erf saturates at 1 within an ulp"
    );
    assert!(fast_erf(f32::NAN).is_nan());
}

#[test]
fn fast_exp_is_within_2_ulps_of_exp_and_saturates_like_it() {
    // Relative error against f64's exp over [−87, 88.7], where eˣ is a normal f32: ≤ 2 ulps
    // (2⁻²³ relative each).
    let worst = (-870_000..=887_000)
        .map(|i| i as f32 * 1e-4)
        .map(|x| {
            let want = (x as f64).exp();
            ((fast_exp(x) as f64 - want) / want).abs()
        })
        .fold(0.0, f64::max);
    assert!(
        worst <= 2.0 * f32::EPSILON as f64,
        "max relative |fast_exp − exp| = {worst:e}"
    );
    assert_eq!(fast_exp(0.0), 1.0);
    assert_eq!(fast_exp(-100.0), 0.0);
    assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(fast_exp(89.0), f32::INFINITY);
    assert_eq!(fast_exp(f32::INFINITY), f32::INFINITY);
    assert!(fast_exp(f32::NAN).is_nan());
}

#[test]
fn fast_tanh_is_within_5e7_of_tanh() {
    let worst = grid()
        .map(|x| (fast_tanh(x) as f64 - (x as f64).tanh()).abs())
        .fold(0.0, f64::max);
    assert!(worst < 5e-7, "max |fast_tanh − tanh| = {worst:e}");
    assert_eq!(fast_tanh(-50.0), -1.0);
    assert!(fast_tanh(f32::NAN).is_nan());
    assert_eq!(fast_tanh(1e-5), 1e-5);
}

#[test]
fn f16_elementwise_kernels_compute_in_f32_and_round_once() {
    // f16 ops widen to f32, compute, round to f16 once (chunked conversions, F16C where
    // present): each element equals f16(f(f32(a), f32(b))), including chunk tails and
    // broadcast rows.
    use half::f16;
    use rewind::{DType, Tensor};
    let (rows, cols) = (130, 257); // 33,410 elements: parallel chunks with ragged tails
    let n = rows * cols;
    rewind::rng::manual_seed(4);
    let a: Vec<f16> = rewind::rng::normal_vec(n)
        .iter()
        .map(|&x| f16::from_f64(x))
        .collect();
    let b: Vec<f16> = rewind::rng::normal_vec(n)
        .iter()
        .map(|&x| f16::from_f64(x))
        .collect();
    let t = |v: &[f16], shape: &[usize]| {
        let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
        Tensor::from_vec(f, shape)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
    };
    let (ta, tb) = (t(&a, &[rows, cols]), t(&b, &[rows, cols]));
    let bias = t(&b[..cols], &[cols]);
    let column = t(&b[..rows], &[rows, 1]);
    let want = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
        (0..n).map(|i| f16::from_f32(f(i)).to_f32()).collect()
    };
    let (af, bf) = (|i: usize| a[i].to_f32(), |i: usize| b[i].to_f32());
    assert_eq!(ta.mul(&tb).unwrap().to_vec_f32(), want(&|i| af(i) * bf(i)));
    assert_eq!(
        ta.add(&bias).unwrap().to_vec_f32(),
        want(&|i| af(i) + bf(i % cols))
    );
    assert_eq!(
        ta.sub(&column).unwrap().to_vec_f32(),
        want(&|i| af(i) - bf(i / cols))
    );
    assert_eq!(
        ta.mul_scalar(0.5).unwrap().to_vec_f32(),
        want(&|i| af(i) * 0.5)
    );
}

#[test]
fn simd_elementwise_kernels_give_the_scalar_formulas_bits() {
    // Elementwise loops run compiled for AVX2 + FMA where the CPU has them; no multiply-add is
    // fused, so each element is the scalar formula's f32 result bit for bit (here: exact GELU
    // over 100k values, spanning several parallel chunks and a tail).
    use rewind::Tensor;
    let xs: Vec<f32> = (0..100_003)
        .map(|i| (i as f32 - 50_000.0) * 1.7e-4)
        .collect();
    let y = Tensor::from_vec(xs.clone(), &[xs.len()])
        .unwrap()
        .gelu()
        .unwrap()
        .to_vec_f32();
    for (x, y) in xs.iter().zip(&y) {
        let want = 0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2));
        assert_eq!(y.to_bits(), want.to_bits(), "gelu({x})");
    }
}
