//! Bad input gives a typed error naming the op and the operands, never a panic; random shapes
//! and values thrown at the public API (proptest) give `Ok` or `Err`, never a panic.

use proptest::prelude::*;
use rewind::{DType, Error, Indices, Tensor};

fn t(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32).unwrap()
}

#[test]
fn shape_mismatch_names_the_op_and_both_shapes() {
    let err = t(&[2, 3]).add(&t(&[4])).unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            op: "add",
            lhs: vec![2, 3],
            rhs: vec![4]
        }
    );
    assert_eq!(
        err.to_string(),
        "add: shapes [2, 3] and [4] are incompatible"
    );
    assert!(matches!(
        t(&[2, 3]).matmul(&t(&[2, 3])),
        Err(Error::ShapeMismatch { op: "matmul", .. })
    ));
    assert!(matches!(
        t(&[2, 3]).linear(&t(&[4, 2]), None),
        Err(Error::ShapeMismatch { op: "linear", .. })
    ));
    assert!(matches!(
        t(&[6]).reshape(&[4]),
        Err(Error::ShapeMismatch { op: "reshape", .. })
    ));
}

#[test]
fn mismatched_dtypes_are_refused_not_promoted() {
    let err = t(&[2])
        .mul(&Tensor::ones(&[2], DType::F16).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        Error::DTypeMismatch {
            op: "mul",
            lhs: DType::F32,
            rhs: DType::F16
        }
    );
}

#[test]
fn out_of_range_indices_are_typed_errors() {
    let w = t(&[5, 2]);
    assert_eq!(
        w.embedding(&Indices::from_slice(&[1, 5])).unwrap_err(),
        Error::IndexOutOfRange {
            op: "embedding",
            index: 5,
            size: 5
        }
    );
    assert!(matches!(
        w.embedding(&Indices::from_slice(&[-1])),
        Err(Error::IndexOutOfRange { .. })
    ));
    let logits = t(&[2, 3]);
    assert_eq!(
        logits
            .cross_entropy(&Indices::from_slice(&[0, 3]), -100)
            .unwrap_err(),
        Error::IndexOutOfRange {
            op: "cross_entropy",
            index: 3,
            size: 3
        }
    );
    assert!(matches!(
        logits.cross_entropy(&Indices::from_slice(&[0]), -100),
        Err(Error::ShapeMismatch { .. })
    ));
    // Logits over 0 classes: said so, not reported as incompatible shapes.
    assert_eq!(
        t(&[2, 0])
            .cross_entropy(&Indices::from_slice(&[0, 0]), -100)
            .unwrap_err()
            .to_string(),
        "cross_entropy: the logits [2, 0] have 0 classes: there is no class for a target to name"
    );
    assert!(matches!(
        t(&[4]).narrow(0, 3, 2),
        Err(Error::IndexOutOfRange { op: "narrow", .. })
    ));
    assert_eq!(
        t(&[2, 3]).softmax(2).unwrap_err().to_string(),
        "softmax: Dimension out of range (expected to be in range of [-2, 1], but got 2)"
    );
}

#[test]
fn empty_and_nan_inputs_do_not_panic() {
    let e = t(&[0, 3]);
    assert!(e.sum().unwrap().item().unwrap() == 0.0);
    assert!(
        e.mean().unwrap().item().unwrap().is_nan(),
        "mean of nothing is NaN, as in PyTorch"
    );
    assert!(e.max().is_err());
    assert_eq!(e.matmul(&t(&[3, 2])).unwrap().shape(), &[0, 2]);
    assert_eq!(
        t(&[2, 0]).matmul(&t(&[0, 3])).unwrap().to_vec_f32(),
        vec![0.0; 6]
    );
    assert_eq!(
        t(&[3, 0]).linear(&t(&[2, 0]), None).unwrap().shape(),
        &[3, 2]
    );
    let nan = Tensor::from_vec(vec![f32::NAN, 1.0], &[2]).unwrap();
    assert!(nan.softmax(0).unwrap().to_vec_f32()[0].is_nan());
    assert!(
        nan.max().unwrap().item().unwrap().is_nan(),
        "NaN propagates through max"
    );
    assert!(Tensor::from_vec(vec![1.0f32; 3], &[2, 2]).is_err());
    assert!(t(&[2]).dropout(1.5, true).is_err());
    assert!(t(&[3]).item().is_err());
}

#[test]
#[should_panic(expected = "add: shapes [2] and [3] are incompatible")]
fn operator_overloads_panic_with_the_same_message() {
    let _ = &t(&[2]) + &t(&[3]);
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4, 0..4)
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        -10.0f32..10.0,
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(0.0)
    ]
}

fn tensor() -> impl Strategy<Value = Tensor> {
    shape().prop_flat_map(|s| {
        let n = s.iter().product::<usize>();
        prop::collection::vec(value(), n).prop_map(move |v| Tensor::from_vec(v, &s).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_binary_ops_return_ok_or_typed_err(a in tensor(), b in tensor(), op in 0usize..8, grad in any::<bool>()) {
        let a = a.requires_grad_(grad).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> rewind::Result<()> {
            let y = match op {
                0 => a.add(&b)?,
                1 => a.sub(&b)?,
                2 => a.mul(&b)?,
                3 => a.div(&b)?,
                4 => a.matmul(&b)?,
                5 => Tensor::cat(&[&a, &b], 0)?,
                6 => a.masked_fill(&b, 1.0)?,
                _ => a.linear(&b, None)?,
            };
            if y.requires_grad() {
                y.sum()?.backward()?;
            }
            Ok(())
        }));
        prop_assert!(r.is_ok(), "panicked");
    }

    #[test]
    fn random_unary_ops_return_ok_or_typed_err(a in tensor(), op in 0usize..14, dim in -4isize..4, k in 0usize..4) {
        let a = a.requires_grad_(true).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> rewind::Result<()> {
            let y = match op {
                0 => a.softmax(dim)?,
                1 => a.log_softmax(dim)?,
                2 => a.sum_dim(dim, k % 2 == 0)?,
                3 => a.max_dim(dim, true)?.0,
                4 => a.transpose(dim, 0)?,
                5 => a.narrow(dim, k, 1)?,
                6 => a.layer_norm(None, None, 1e-5)?,
                7 => a.reshape(&[k, 2])?,
                8 => a.gelu()?.tanh()?.exp()?,
                9 => a.max()?,
                10 => a.cross_entropy(&Indices::from_slice(&vec![k as i64; a.numel() / a.shape().last().copied().unwrap_or(1).max(1)]), -100)?,
                11 => a.embedding(&Indices::from_slice(&[k as i64]))?,
                12 => a.dropout(0.5, true)?,
                _ => a.to_dtype(DType::F16)?.mean()?,
            };
            y.sum()?.backward()
        }));
        prop_assert!(r.is_ok(), "panicked");
    }
}
