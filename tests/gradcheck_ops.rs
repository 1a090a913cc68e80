//! Every op's backward against central differences in f64 (rewind::gradcheck), broadcasting
//! included, plus proof that the checker catches a wrong derivative.

use rewind::gradcheck::{GradcheckOptions, gradcheck};
use rewind::ops::custom::custom_op;
use rewind::ops::spec::OpSpec;
use rewind::{DType, GeluApprox, Indices, Result, Tensor};

mod common;
use common::uniform_f64 as rand;

fn check(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let r = gradcheck(f, inputs, GradcheckOptions::default()).unwrap();
    assert!(
        r.passed,
        "{name}: analytic and numeric gradients disagree: {:?}",
        r.worst
    );
}

#[test]
fn elementwise_binary_ops_with_broadcasting() {
    let shapes: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[3, 4]),
        (&[3, 4], &[4]),
        (&[4], &[3, 4]),
        (&[2, 1, 4], &[3, 1]),
        (&[3, 4], &[]),
    ];
    for (i, (sa, sb)) in shapes.iter().enumerate() {
        let a = rand(sa, -2.0, 2.0, i as u64);
        let b = rand(sb, 0.5, 2.0, 100 + i as u64);
        check("add", |x| x[0].add(&x[1]), &[a.clone(), b.clone()]);
        check("sub", |x| x[0].sub(&x[1]), &[a.clone(), b.clone()]);
        check("mul", |x| x[0].mul(&x[1]), &[a.clone(), b.clone()]);
        check("div", |x| x[0].div(&x[1]), &[a.clone(), b.clone()]);
    }
}

#[test]
fn elementwise_unary_ops() {
    let x = rand(&[2, 5], -2.0, 2.0, 1);
    let pos = rand(&[2, 5], 0.2, 3.0, 2);
    check("neg", |x| x[0].neg(), std::slice::from_ref(&x));
    check(
        "add_scalar",
        |x| x[0].add_scalar(1.5),
        std::slice::from_ref(&x),
    );
    check(
        "mul_scalar",
        |x| x[0].mul_scalar(-0.7),
        std::slice::from_ref(&x),
    );
    check("exp", |x| x[0].exp(), std::slice::from_ref(&x));
    check("tanh", |x| x[0].tanh(), std::slice::from_ref(&x));
    check("sigmoid", |x| x[0].sigmoid(), std::slice::from_ref(&x));
    check("relu", |x| x[0].relu(), std::slice::from_ref(&x));
    check("gelu", |x| x[0].gelu(), std::slice::from_ref(&x));
    check(
        "gelu_tanh",
        |x| x[0].gelu_with(GeluApprox::Tanh),
        std::slice::from_ref(&x),
    );
    check("log", |x| x[0].log(), std::slice::from_ref(&pos));
    check("sqrt", |x| x[0].sqrt(), std::slice::from_ref(&pos));
    check("pow", |x| x[0].powf(2.5), std::slice::from_ref(&pos));
}

#[test]
fn matmul_2d_and_batched() {
    check(
        "matmul 2-D",
        |x| x[0].matmul(&x[1]),
        &[rand(&[3, 4], -1.0, 1.0, 1), rand(&[4, 5], -1.0, 1.0, 2)],
    );
    check(
        "matmul batched",
        |x| x[0].matmul(&x[1]),
        &[
            rand(&[2, 3, 4], -1.0, 1.0, 3),
            rand(&[2, 4, 2], -1.0, 1.0, 4),
        ],
    );
    check(
        "matmul batched·shared",
        |x| x[0].matmul(&x[1]),
        &[rand(&[2, 3, 4], -1.0, 1.0, 5), rand(&[4, 2], -1.0, 1.0, 6)],
    );
    check(
        "matmul shared·batched",
        |x| x[0].matmul(&x[1]),
        &[rand(&[3, 4], -1.0, 1.0, 7), rand(&[2, 4, 2], -1.0, 1.0, 8)],
    );
}

#[test]
fn linear_with_and_without_bias() {
    let (x, w, b) = (
        rand(&[2, 3, 4], -1.0, 1.0, 1),
        rand(&[5, 4], -1.0, 1.0, 2),
        rand(&[5], -1.0, 1.0, 3),
    );
    check(
        "linear",
        |t| t[0].linear(&t[1], Some(&t[2])),
        &[x.clone(), w.clone(), b],
    );
    check("linear no bias", |t| t[0].linear(&t[1], None), &[x, w]);
}

#[test]
fn shape_ops() {
    let x = rand(&[2, 3, 4], -1.0, 1.0, 1);
    check(
        "reshape",
        |t| t[0].reshape(&[6, 4])?.mul(&t[0].reshape(&[6, 4])?),
        std::slice::from_ref(&x),
    );
    check(
        "transpose",
        |t| t[0].transpose(0, 2),
        std::slice::from_ref(&x),
    );
    check(
        "permute",
        |t| t[0].permute(&[1, 2, 0]),
        std::slice::from_ref(&x),
    );
    check("narrow", |t| t[0].narrow(1, 1, 2), std::slice::from_ref(&x));
    let y = rand(&[2, 2, 4], -1.0, 1.0, 2);
    check("cat", |t| Tensor::cat(&[&t[0], &t[1]], 1), &[x, y]);
}

#[test]
fn reductions() {
    let x = rand(&[3, 4, 2], -1.0, 1.0, 1);
    check("sum", |t| t[0].sum(), std::slice::from_ref(&x));
    check("mean", |t| t[0].mean(), std::slice::from_ref(&x));
    check(
        "sum_dim",
        |t| t[0].sum_dim(1, false),
        std::slice::from_ref(&x),
    );
    check(
        "mean_dim keepdim",
        |t| t[0].mean_dim(-1, true),
        std::slice::from_ref(&x),
    );
    check("max", |t| t[0].max(), std::slice::from_ref(&x));
    check(
        "max_dim",
        |t| Ok(t[0].max_dim(1, false)?.0),
        std::slice::from_ref(&x),
    );
}

#[test]
fn softmax_family_and_cross_entropy() {
    let x = rand(&[3, 5], -2.0, 2.0, 1);
    check("softmax", |t| t[0].softmax(-1), std::slice::from_ref(&x));
    check(
        "softmax dim 0",
        |t| t[0].softmax(0),
        std::slice::from_ref(&x),
    );
    check(
        "log_softmax",
        |t| t[0].log_softmax(1),
        std::slice::from_ref(&x),
    );
    let targets = Indices::from_slice(&[4, -100, 0]);
    check(
        "cross_entropy",
        |t| t[0].cross_entropy(&targets, -100),
        std::slice::from_ref(&x),
    );
}

#[test]
fn embedding_layer_norm_dropout_masked_fill_cast() {
    let w = rand(&[5, 3], -1.0, 1.0, 1);
    let ids = Indices::new(vec![1, 4, 1, 0], &[2, 2]).unwrap();
    check(
        "embedding (repeated ids)",
        |t| t[0].embedding(&ids),
        std::slice::from_ref(&w),
    );

    let (x, g, b) = (
        rand(&[4, 6], -1.0, 1.0, 2),
        rand(&[6], 0.5, 1.5, 3),
        rand(&[6], -0.5, 0.5, 4),
    );
    check(
        "layer_norm",
        |t| t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5),
        &[x.clone(), g, b],
    );
    check(
        "layer_norm no affine",
        |t| t[0].layer_norm(None, None, 1e-5),
        std::slice::from_ref(&x),
    );

    rewind::rng::manual_seed(9);
    check(
        "dropout",
        |t| t[0].dropout(0.4, true),
        std::slice::from_ref(&x),
    );

    let mask = Tensor::from_vec(vec![0.0f64, 1.0, 0.0, 0.0, 1.0, 0.0], &[6]).unwrap();
    check(
        "masked_fill",
        |t| t[0].masked_fill(&mask, -1e4),
        std::slice::from_ref(&x),
    );

    let opts = GradcheckOptions {
        eps: 1e-2,
        atol: 1e-3,
        rtol: 1e-2,
    };
    let r = gradcheck(
        |t| {
            t[0].to_dtype(DType::F32)?
                .mul_scalar(3.0)?
                .to_dtype(DType::F64)
        },
        std::slice::from_ref(&x),
        opts,
    )
    .unwrap();
    assert!(r.passed, "cast f64→f32→f64: {:?}", r.worst);
}

/// y = sin x as a custom op whose backward multiplies by `derivative(x)`.
fn sin_with(t: &[Tensor], derivative: fn(f64) -> f64) -> Result<Tensor> {
    let map = |x: &Tensor, f: fn(f64) -> f64| {
        Tensor::from_vec(
            x.to_vec_f64().into_iter().map(f).collect::<Vec<f64>>(),
            x.shape(),
        )
    };
    static SIN: OpSpec = OpSpec::new("sin", "Sin");
    custom_op(
        &SIN,
        &[&t[0]],
        |x| Ok((map(x[0], f64::sin)?, vec![x[0].clone()])),
        move |g, saved, _| Ok(vec![Some(g.mul(&map(&saved[0], derivative)?)?)]),
    )
}

#[test]
fn custom_op_with_correct_derivative_passes() {
    // y = sin x, y' = cos x.
    check(
        "custom sin",
        |t| sin_with(t, f64::cos),
        &[rand(&[4], -3.0, 3.0, 1)],
    );
}

#[test]
fn gradcheck_catches_a_wrong_derivative() {
    // y = sin x with the derivative deliberately given as −cos x.
    let r = gradcheck(
        |t| sin_with(t, |x| -x.cos()),
        &[rand(&[4], -1.0, 1.0, 1)],
        GradcheckOptions::default(),
    )
    .unwrap();
    assert!(
        !r.passed,
        "the checker must flag −cos as the derivative of sin"
    );
    let m = r.worst.unwrap();
    assert!(
        (m.analytic + m.numeric).abs() < 1e-6 * m.numeric.abs().max(1.0),
        "analytic is the negated numeric: {m:?}"
    );
}

#[test]
fn gradcheck_catches_a_derivative_off_by_a_small_factor() {
    // y = x², derivative given as 2.01x: a 0.5% error, above rtol = 1e-3.
    static ALMOST_SQUARE: OpSpec = OpSpec::new("almost_square", "AlmostSquare");
    let off = |t: &[Tensor]| {
        custom_op(
            &ALMOST_SQUARE,
            &[&t[0]],
            |x| Ok((x[0].mul(x[0])?, vec![x[0].clone()])),
            |g, s, _| Ok(vec![Some(g.mul(&s[0].mul_scalar(2.01)?)?)]),
        )
    };
    let r = gradcheck(off, &[rand(&[3], 0.5, 2.0, 1)], GradcheckOptions::default()).unwrap();
    assert!(!r.passed);
}
