//! Sizes a process cannot hold: impossible shapes are typed errors at construction, and an
//! allocation the system refuses is `Error::OutOfMemory` naming the op, never an abort.
//!
//! The out-of-memory tests ask for 10¹² f32 elements (4 TB). Linux's default overcommit
//! heuristic (`vm.overcommit_memory = 0`) refuses a single allocation that large on any machine
//! with less memory than that, so the allocator returns null and rewind reports it.

use proptest::prelude::*;
use rewind::{DType, Error, Indices, Tensor};

const TERA: usize = 1_000_000_000_000;

fn is_oom(r: rewind::Result<Tensor>, op: &str) -> bool {
    matches!(r, Err(Error::OutOfMemory { op: o, bytes }) if o == op && bytes >= 4 * TERA)
}

#[test]
fn a_shape_whose_element_count_wraps_is_refused_before_any_gemm_runs() {
    // [2, 2^63] has 2^64 elements: the product wraps to 0 in unchecked arithmetic, which used to
    // make a zero-length buffer that `matmul` then read far out of bounds.
    let err = Tensor::zeros(&[2, 1 << 63], DType::F32).unwrap_err();
    assert!(
        matches!(err, Error::ShapeTooLarge { op: "full", .. }),
        "{err}"
    );
    let err = Tensor::from_vec(Vec::<f32>::new(), &[2, 1 << 63]).unwrap_err();
    assert!(matches!(err, Error::ShapeTooLarge { .. }), "{err}");
    let x = Tensor::zeros(&[0], DType::F32).unwrap();
    assert!(x.reshape(&[0, 1 << 62, 1 << 62]).is_err());
    assert!(Indices::new(vec![], &[4, 1 << 62]).is_err());
}

#[test]
fn each_creation_op_reports_out_of_memory_for_a_trillion_elements() {
    assert!(is_oom(Tensor::zeros(&[TERA], DType::F32), "full"));
    assert!(is_oom(Tensor::ones(&[TERA], DType::F32), "full"));
    assert!(is_oom(Tensor::full(&[TERA], 2.0, DType::F32), "full"));
    assert!(is_oom(Tensor::randn(&[TERA]), "randn"));
}

#[test]
fn matmul_broadcast_and_embedding_report_out_of_memory_for_a_trillion_element_output() {
    let col = Tensor::zeros(&[1_000_000, 1], DType::F32).unwrap();
    let row = Tensor::zeros(&[1, 1_000_000], DType::F32).unwrap();
    assert!(is_oom(col.matmul(&row), "matmul"));
    assert!(is_oom(col.add(&row), "add"));
    assert!(is_oom(col.mul(&row), "mul"));
    // 10⁶ token ids into a [1, 10⁶] table: a [10⁶, 10⁶] output.
    let ids = Indices::new(vec![0; 1_000_000], &[1_000_000]).unwrap();
    assert!(is_oom(row.embedding(&ids), "embedding"));
    // An empty input whose reduction output is huge.
    let empty = Tensor::zeros(&[0, TERA], DType::F32).unwrap();
    assert!(is_oom(empty.sum_dim(0, false), "sum_dim"));
}

#[test]
fn the_error_names_the_op_and_the_bytes() {
    let err = Tensor::zeros(&[TERA], DType::F32).unwrap_err();
    assert_eq!(
        err.to_string(),
        "full: out of memory: the allocator refused 4000000000000 bytes (3725.3 GiB)"
    );
}

/// Dims that are either small or far beyond what any machine can allocate (≥ 2^42 elements),
/// so every case is cheap: it computes on tiny tensors or fails before allocating.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..4,
        1 => Just(1usize << 42),
        1 => Just(1usize << 61),
        1 => Just(1usize << 63),
        1 => Just(usize::MAX / 3),
        1 => Just(usize::MAX),
    ]
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dim(), 0..4)
}

/// Every op over the public API, on a tensor that exists (a small or empty one).
fn exercise(a: &Tensor, b: &Tensor, s: &[usize]) {
    let _ = a.matmul(b);
    let _ = a.add(b);
    let _ = a.mul(b);
    let _ = a.reshape(s);
    let _ = Tensor::cat(&[a, b], 0);
    let _ = Tensor::cat(&[a, b], -1);
    for d in 0..a.rank() as isize {
        let _ = a.sum_dim(d, true);
        let _ = a.mean_dim(d, false);
        let _ = a.max_dim(d, false);
        let _ = a.softmax(d);
        let _ = a.narrow(d, 1, usize::MAX);
    }
    let _ = a.sum();
    let _ = a.max();
    let _ = a.linear(b, None);
    let _ = a.layer_norm(None, None, 1e-5);
    let _ = a.layer_norm(Some(b), Some(b), 1e-5);
    if let Ok(ids) = Indices::new(vec![0; rewind::shape::numel(s).min(4)], s) {
        let _ = a.embedding(&ids);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Shapes near `usize::MAX`, zero-size dims and huge broadcasts never crash the process:
    /// each call is `Ok` or a typed error.
    #[test]
    fn no_shape_crashes_the_process(sa in shape(), sb in shape(), s in shape()) {
        for sh in [&sa, &sb, &s] {
            let _ = Tensor::zeros(sh, DType::F32);
            let _ = Tensor::randn(sh);
            let _ = Tensor::from_vec(vec![0f32; 3], sh);
        }
        // Operands that exist: the shape when it is small, else its zero-size cousin.
        let existing = |sh: &[usize]| {
            Tensor::zeros(sh, DType::F32).or_else(|_| {
                let mut z = sh.to_vec();
                if let Some(first) = z.first_mut() { *first = 0; }
                Tensor::zeros(&z, DType::F32)
            })
        };
        if let (Ok(a), Ok(b)) = (existing(&sa), existing(&sb)) {
            exercise(&a, &b, &s);
            let a = a.requires_grad_(true).unwrap();
            if let Ok(y) = a.mul(&b).and_then(|y| y.sum()) {
                let _ = y.backward();
            }
            if let Ok(y) = a.layer_norm(None, None, 1e-5).and_then(|y| y.sum()) {
                let _ = y.backward();
            }
            for d in 0..a.rank() as isize {
                if let Ok(y) = a.log_softmax(d).and_then(|y| y.sum()) {
                    let _ = y.backward();
                }
                if let Ok(y) = a.sum_dim(d, false).and_then(|y| y.sum()) {
                    let _ = y.backward();
                }
            }
        }
    }
}
