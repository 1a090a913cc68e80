//! The GEMM against an f64 product and against its own definition, on every kernel.
use super::*;
use std::mem::MaybeUninit;

fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let a = (0..m * k)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
        .collect();
    let b = (0..k * n)
        .map(|i| ((i * 5 % 19) as f32 - 9.0) * 0.1)
        .collect();
    (a, b)
}

/// Element (i, j) of an r×c operand stored as `l`.
fn at(v: &[f32], l: Layout, (r, c): (usize, usize), i: usize, j: usize) -> f64 {
    f64::from(match l {
        Layout::Normal => v[i * c + j],
        Layout::Transposed => v[j * r + i],
    })
}

#[test]
fn every_layout_and_ragged_size_matches_an_f64_product_and_never_reads_an_overwritten_c() {
    use Layout::*;
    for (m, k, n) in [
        (1, 1, 1),
        (7, 3, 17),
        (32, 16, 32),
        (97, 300, 33),
        (13, 513, 300),
        (5, 0, 4),
    ] {
        let (a, b) = operands(m, k, n);
        for la in [Normal, Transposed] {
            for lb in [Normal, Transposed] {
                let want: Vec<f64> = (0..m * n)
                    .map(|e| {
                        (0..k)
                            .map(|p| at(&a, la, (m, k), e / n, p) * at(&b, lb, (k, n), p, e % n))
                            .sum()
                    })
                    .collect();
                // Overwrite: C starts as NaN, which a read would carry into the result.
                let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
                f32::gemm_overwrite(m, k, n, &a, la, &b, lb, &mut c);
                // Accumulate: C starts at 1.
                let mut acc = vec![1.0f32; m * n];
                f32::gemm(m, k, n, &a, la, &b, lb, true, &mut acc);
                for e in 0..m * n {
                    // SAFETY: gemm_overwrite initialised every element.
                    let got = f64::from(unsafe { c[e].assume_init() });
                    let tol = 1e-5 * (1.0 + want[e].abs()) * (k as f64 + 1.0).sqrt();
                    assert!(
                        (got - want[e]).abs() <= tol,
                        "{m}x{k}x{n} {la:?} {lb:?} at {e}: {got} vs {}",
                        want[e]
                    );
                    let got = f64::from(acc[e]);
                    assert!(
                        (got - want[e] - 1.0).abs() <= tol,
                        "accumulating {m}x{k}x{n} at {e}"
                    );
                }
            }
        }
    }
}

/// The definition every kernel implements: element (i, j) is `acc = fma(a_ip, b_pj, acc)`
/// for p = 0, 1, … in order, from `c0` (0, or C's value when accumulating).
fn chain(
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    (m, k, n): (usize, usize, usize),
    c0: f32,
) -> Vec<u32> {
    let get = |v: &[f32], l: Layout, (r, c): (usize, usize), i: usize, j: usize| match l {
        Layout::Normal => v[i * c + j],
        Layout::Transposed => v[j * r + i],
    };
    (0..m * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            (0..k)
                .fold(c0, |acc, p| {
                    get(a, la, (m, k), i, p).mul_add(get(b, lb, (k, n), p, j), acc)
                })
                .to_bits()
        })
        .collect()
}

#[test]
fn every_kernel_computes_each_element_as_one_fma_chain_in_k_order() {
    use Layout::*;
    // Ragged sizes around every kernel's tile and block sizes (k = 513 crosses the portable
    // kernel's 256-wide k blocks, k = 800 the SIMD kernels' 768-wide ones, n = 4100 the
    // column blocks), and k = 0.
    let shapes = [
        (1, 1, 1),
        (7, 3, 17),
        (13, 300, 33),
        (25, 513, 70),
        (26, 800, 37),
        (3, 40, 4100),
        (200, 64, 96),
        (5, 0, 4),
    ];
    let kernels = Kernel::available();
    assert!(kernels.iter().any(|k| k.name() == "portable 4×8"));
    for (m, k, n) in shapes {
        let (a, b) = operands(m, k, n);
        for la in [Normal, Transposed] {
            for lb in [Normal, Transposed] {
                let want = chain(&a, la, &b, lb, (m, k, n), 0.0);
                let want_acc = chain(&a, la, &b, lb, (m, k, n), 1.0);
                for kern in &kernels {
                    let mut c = vec![f32::NAN; m * n];
                    kern.gemm(m, k, n, &a, la, &b, lb, false, &mut c);
                    let got: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                    assert!(got == want, "{} {m}x{k}x{n} {la:?} {lb:?}", kern.name());
                    let mut c = vec![1.0f32; m * n];
                    kern.gemm(m, k, n, &a, la, &b, lb, true, &mut c);
                    let got: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                    assert!(got == want_acc, "{} accumulating {m}x{k}x{n}", kern.name());
                }
            }
        }
    }
}

/// The bits of a·b (b stored as `lb`: `[n, k]` is a weight's layout) computed on a pool of
/// `threads`.
fn bits_on_threads(
    threads: usize,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (b, lb): (&[f32], Layout),
) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut c = vec![0.0f32; m * n];
    pool.install(|| f32::gemm(m, k, n, a, Layout::Normal, b, lb, false, &mut c));
    c.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn the_bits_do_not_depend_on_the_thread_count() {
    // The step's widest product, and a ragged one (a short last panel of B, 16 panels over 3
    // threads, k in two blocks); B as a weight (`[n, k]`) and as used (`[k, n]`), whose block
    // the threads pack as runs of whole panels. Determinism: store and recompute run on
    // whatever pool.
    for shape in [(512, 1024, 256), (301, 1100, 250)] {
        let (a, b) = operands(shape.0, shape.1, shape.2);
        for lb in [Layout::Transposed, Layout::Normal] {
            let one = bits_on_threads(1, shape, &a, (&b, lb));
            for t in [2, 3] {
                let many = bits_on_threads(t, shape, &a, (&b, lb));
                assert!(one == many, "{shape:?} {lb:?}: {t} threads");
            }
        }
    }
}

#[test]
fn thin_products_are_the_same_fma_chain_as_the_packed_path() {
    use Layout::*;
    // m ≤ thin::ROWS skips packing; its elements must be the kernels' chain bit for bit, on
    // ragged widths around its 256-column passes and 8-lane groups, and with k = 1.
    for m in 1..=thin::ROWS {
        for (k, n) in [(1, 1), (3, 7), (300, 17), (513, 257), (64, 4100)] {
            let (a, b) = operands(m, k, n);
            for la in [Normal, Transposed] {
                for lb in [Normal, Transposed] {
                    let mut c = vec![f32::NAN; m * n];
                    f32::gemm(m, k, n, &a, la, &b, lb, false, &mut c);
                    let got: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                    let want = chain(&a, la, &b, lb, (m, k, n), 0.0);
                    assert!(got == want, "{m}x{k}x{n} {la:?} {lb:?}");
                    let mut c = vec![1.0f32; m * n];
                    f32::gemm(m, k, n, &a, la, &b, lb, true, &mut c);
                    let got: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                    let want = chain(&a, la, &b, lb, (m, k, n), 1.0);
                    assert!(got == want, "accumulating {m}x{k}x{n} {la:?} {lb:?}");
                }
            }
        }
    }
}

#[test]
fn a_thin_product_split_over_threads_keeps_its_bits() {
    // One row against a 1000-column weight stored as `[out, in]` (a decoding step's head):
    // the columns split over the threads; each element's chain does not change.
    let shape = (1, 1024, 1000);
    let (a, b) = operands(shape.0, shape.1, shape.2);
    let weight = (b.as_slice(), Layout::Transposed);
    let one = bits_on_threads(1, shape, &a, weight);
    assert_eq!(
        one,
        chain(&a, Layout::Normal, &b, Layout::Transposed, shape, 0.0)
    );
    assert_eq!(one, bits_on_threads(2, shape, &a, weight), "2 threads");
    assert_eq!(one, bits_on_threads(3, shape, &a, weight), "3 threads");
}

#[test]
fn bf16_products_are_the_f32_chain_of_the_widened_operands_rounded_once() {
    use Layout::*;
    // Widening bf16 is exact, so each element is the f32 kernel's chain (any kernel: they
    // agree) rounded to bf16 once: within half a bf16 step (≤ 2⁻⁸ relative) of the f64 product of
    // the bf16 operands, plus f32 accumulation's error.
    for (m, k, n) in [
        (1, 1, 1),
        (7, 3, 17),
        (13, 300, 33),
        (25, 513, 70),
        (5, 0, 4),
    ] {
        let (a, b) = operands(m, k, n);
        let round = |v: &[f32]| -> Vec<bf16> { v.iter().map(|&x| bf16::from_f32(x)).collect() };
        let (ha, hb) = (round(&a), round(&b));
        let (wa, wb): (Vec<f32>, Vec<f32>) = (
            ha.iter().map(|x| x.to_f32()).collect(),
            hb.iter().map(|x| x.to_f32()).collect(),
        );
        for la in [Normal, Transposed] {
            for lb in [Normal, Transposed] {
                for (beta, c0) in [(false, 0.0f32), (true, 1.0)] {
                    let mut c = vec![bf16::from_f32(c0); m * n];
                    bf16::gemm(m, k, n, &ha, la, &hb, lb, beta, &mut c);
                    let chain = chain(&wa, la, &wb, lb, (m, k, n), c0);
                    for e in 0..m * n {
                        let once = bf16::from_f32(f32::from_bits(chain[e]));
                        assert_eq!(c[e].to_bits(), once.to_bits(), "{m}x{k}x{n} {la:?} {lb:?}");
                        let want: f64 = f64::from(c0)
                            + (0..k)
                                .map(|p| {
                                    at(&wa, la, (m, k), e / n, p) * at(&wb, lb, (k, n), p, e % n)
                                })
                                .sum::<f64>();
                        let tol = want.abs() / 256.0 + 1e-5 * (k as f64 + 1.0).sqrt();
                        let got = f64::from(c[e].to_f32());
                        assert!(
                            (got - want).abs() <= tol,
                            "{m}x{k}x{n} at {e}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_vector_row_gather_packs_what_the_element_copy_packs() {
    // Every row count the kernels pack, k from 1 to past two 8-wide blocks (tails of every
    // length), starting mid-row (k0 > 0) in a matrix wider than the block.
    let (rows, k) = (40, 53);
    let a: Vec<f32> = (0..rows * k).map(|i| i as f32 + 0.25).collect();
    fn check<const R: usize>(a: &[f32], k: usize) {
        for (r0, k0, kc) in [
            (0, 0, 1),
            (1, 3, 7),
            (2, 5, 8),
            (3, 0, 9),
            (0, 7, 23),
            (5, 2, 51),
        ] {
            let mut got = vec![f32::NAN; kc * R];
            let packed = super::pack_x86::gather_f32::<R>(a, (r0, k, k0), kc, &mut got);
            // Without AVX2 it declines and writes nothing: packing copies element by element.
            assert_eq!(packed, std::arch::is_x86_feature_detected!("avx2"));
            let want: Vec<f32> = (0..kc)
                .flat_map(|q| (0..R).map(move |r| (r, q)))
                .map(|(r, q)| {
                    if packed {
                        a[(r0 + r) * k + k0 + q]
                    } else {
                        f32::NAN
                    }
                })
                .collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "R = {R}, rows from {r0}, k {k0}..{}",
                k0 + kc
            );
        }
    }
    check::<6>(&a, k);
    check::<8>(&a, k);
    check::<12>(&a, k);
    check::<16>(&a, k);
    check::<32>(&a, k);
}
