//! The f32 kernels' fast transcendental functions against f64 references.

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
