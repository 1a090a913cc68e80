//! The f32 kernels' fast transcendental functions against f64 references, and f16 elementwise
//! kernels rounding once from f32.

use rewind::dtype::{fast_erf, fast_tanh};

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
