//! Matrix products through the `gemm` crate (threaded, strided: transposes are free; measured
//! against `matrixmultiply` and a hand-written AVX2 kernel in `benches/gemm_kernels.rs`).
//! f16 operands are widened to f32, multiplied with f32 accumulation and rounded once.

use crate::dtype::Element;
use half::f16;
use half::slice::HalfFloatSliceExt;

thread_local! {
    static FLOPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Floating-point operations (2·m·k·n per product) of the GEMMs this thread has called: what a
/// test or a planner counts to tell recomputed matmuls from reused ones.
pub fn flops() -> u64 {
    FLOPS.with(|f| f.get())
}

fn count(m: usize, k: usize, n: usize) {
    let f = 2u64
        .saturating_mul(m as u64)
        .saturating_mul(k as u64)
        .saturating_mul(n as u64);
    FLOPS.with(|c| c.set(c.get().saturating_add(f)));
}

/// How an operand is laid out in memory relative to the product it enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored as used: `[rows, cols]` row-major.
    Normal,
    /// Stored transposed: the buffer is `[cols, rows]` row-major.
    Transposed,
}

/// Element types with a GEMM.
pub trait Gemm: Element {
    /// `c = a·b + beta·c` with `a` m×k, `b` k×n, `c` m×n row-major.
    #[allow(clippy::too_many_arguments)] // the BLAS signature: sizes, operands, layouts
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        la: Layout,
        b: &[Self],
        lb: Layout,
        beta: bool,
        c: &mut [Self],
    );

    /// `c = a·b` into memory that need not be initialised: every one of the m·n elements is
    /// written and none is read.
    #[allow(clippy::too_many_arguments)] // the BLAS signature: sizes, operands, layouts
    fn gemm_overwrite(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        la: Layout,
        b: &[Self],
        lb: Layout,
        c: &mut [std::mem::MaybeUninit<Self>],
    );
}

/// `a·b` (m×k times k×n) as a new m×n buffer, without zeroing it first (the product
/// overwrites it); `op` names the caller in an out-of-memory error.
#[allow(clippy::too_many_arguments)] // the BLAS signature: sizes, operands, layouts
pub fn product<E: Gemm>(
    op: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a: &[E],
    la: Layout,
    b: &[E],
    lb: Layout,
) -> crate::error::Result<Vec<E>> {
    let len = m.checked_mul(n).ok_or(crate::error::Error::OutOfMemory {
        op,
        bytes: usize::MAX,
    })?;
    let mut c: Vec<E> = super::with_capacity(op, len)?;
    E::gemm_overwrite(m, k, n, a, la, b, lb, &mut c.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len` and `gemm_overwrite` initialised all `len`
    // elements.
    unsafe { c.set_len(len) };
    Ok(c)
}

fn strides(rows: usize, cols: usize, l: Layout) -> (isize, isize) {
    match l {
        Layout::Normal => (cols as isize, 1),
        Layout::Transposed => (1, rows as isize),
    }
}

/// Panics unless the operands hold m×k, k×n and m×n elements (checked without overflow).
fn check_lengths(m: usize, k: usize, n: usize, a: usize, b: usize, c: usize) {
    let fits = |len: usize, r: usize, c: usize| r.checked_mul(c).is_some_and(|x| x <= len);
    assert!(
        fits(a, m, k) && fits(b, k, n) && fits(c, m, n),
        "gemm: operand too short"
    );
}

/// The engine's [`Gemm`] for `$t` on the raw product `$raw` (lengths checked, FLOPs counted).
macro_rules! gemm_via {
    ($t:ty, $raw:ident) => {
        impl Gemm for $t {
            fn gemm_overwrite(
                m: usize,
                k: usize,
                n: usize,
                a: &[$t],
                la: Layout,
                b: &[$t],
                lb: Layout,
                c: &mut [std::mem::MaybeUninit<$t>],
            ) {
                check_lengths(m, k, n, a.len(), b.len(), c.len());
                count(m, k, n);
                // SAFETY: the lengths were checked above; `c` does not alias `a` or `b`, and
                // with beta false it is written, never read.
                unsafe { $raw(m, k, n, a, la, b, lb, false, c.as_mut_ptr().cast::<$t>()) }
            }

            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[$t],
                la: Layout,
                b: &[$t],
                lb: Layout,
                beta: bool,
                c: &mut [$t],
            ) {
                check_lengths(m, k, n, a.len(), b.len(), c.len());
                count(m, k, n);
                // SAFETY: the lengths were checked above; `c` (a mutable borrow) does not alias
                // `a` or `b` and is initialised.
                unsafe { $raw(m, k, n, a, la, b, lb, beta, c.as_mut_ptr()) }
            }
        }
    };
}

/// `c = a·b (+ c when beta)` through the `gemm` crate's kernels for `$t`: AVX-512 where the CPU
/// has it, AVX2 + FMA or portable ones elsewhere (chosen at run time), threaded on rayon's pool.
/// Its threads split rows and columns of C, never k, so every element sums in one order
/// whatever the thread count: the same operands give the same bits. Also implements [`Gemm`].
macro_rules! via_gemm_crate {
    ($name:ident, $t:ty, $kernels:path) => {
        /// # Safety
        /// `a`, `b` hold m×k and k×n elements laid out as `la`, `lb`; `c` points to m·n
        /// writable elements (initialised when `beta`) aliasing neither.
        #[allow(clippy::too_many_arguments)] // the BLAS signature
        unsafe fn $name(
            m: usize,
            k: usize,
            n: usize,
            a: &[$t],
            la: Layout,
            b: &[$t],
            lb: Layout,
            beta: bool,
            c: *mut $t,
        ) {
            use $kernels as kernels;
            let (rsa, csa) = strides(m, k, la);
            let (rsb, csb) = strides(k, n, lb);
            let threads = rayon::current_num_threads();
            let par = if threads > 1 {
                gemm_common::Parallelism::Rayon(threads)
            } else {
                gemm_common::Parallelism::None
            };
            // SAFETY: the caller's contract. The kernel computes dst = α·dst + β·a·b, column
            // strides first; with read_dst false it writes every element of dst, reading none.
            unsafe {
                kernels::get_gemm_fn()(
                    m,
                    n,
                    k,
                    c,
                    1,
                    n as isize,
                    beta,
                    a.as_ptr(),
                    csa,
                    rsa,
                    b.as_ptr(),
                    csb,
                    rsb,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        }
        gemm_via!($t, $name);
    };
}

via_gemm_crate!(f32_backend, f32, gemm_f32::gemm::f32);
via_gemm_crate!(f64_backend, f64, gemm_f64::gemm::f64);

impl Gemm for f16 {
    fn gemm_overwrite(
        m: usize,
        k: usize,
        n: usize,
        a: &[f16],
        la: Layout,
        b: &[f16],
        lb: Layout,
        c: &mut [std::mem::MaybeUninit<f16>],
    ) {
        let mut wc = vec![f16::ZERO; m * n];
        Self::gemm(m, k, n, a, la, b, lb, false, &mut wc);
        for (o, v) in c.iter_mut().zip(wc) {
            o.write(v);
        }
    }

    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f16],
        la: Layout,
        b: &[f16],
        lb: Layout,
        beta: bool,
        c: &mut [f16],
    ) {
        let widen = |x: &[f16]| {
            let mut w = vec![0.0f32; x.len()];
            x.convert_to_f32_slice(&mut w);
            w
        };
        let (wa, wb) = (widen(a), widen(b));
        let mut wc = if beta { widen(c) } else { vec![0.0; m * n] };
        f32::gemm(m, k, n, &wa, la, &wb, lb, beta, &mut wc);
        c.convert_from_f32_slice(&wc);
    }
}

#[cfg(test)]
mod tests {
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
                                .map(|p| {
                                    at(&a, la, (m, k), e / n, p) * at(&b, lb, (k, n), p, e % n)
                                })
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

    #[test]
    fn the_bits_do_not_depend_on_the_thread_count() {
        // The step's widest product; determinism: store and recompute run on whatever pool.
        let (m, k, n) = (512, 1024, 256);
        let (a, b) = operands(m, k, n);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0f32; m * n];
            pool.install(|| {
                f32::gemm(
                    m,
                    k,
                    n,
                    &a,
                    Layout::Normal,
                    &b,
                    Layout::Transposed,
                    false,
                    &mut c,
                )
            });
            c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        assert_eq!(one, run(2), "2 threads");
        assert_eq!(one, run(3), "3 threads");
    }
}
