//! Matrix products through the `matrixmultiply` crate (threaded, strided: transposes are free).
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

macro_rules! gemm_via {
    ($t:ty, $f:path) => {
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
                let (rsa, csa) = strides(m, k, la);
                let (rsb, csb) = strides(k, n, lb);
                // SAFETY: the lengths were checked above; the strides describe row-major m×k,
                // k×n and m×n matrices inside those slices; `c` does not alias `a` or `b`. With
                // β = 0 matrixmultiply writes every element of C without reading it ("if β is
                // zero, then C does not need to be initialized"), zeros when k = 0.
                unsafe {
                    $f(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        0.0,
                        c.as_mut_ptr().cast::<$t>(),
                        n as isize,
                        1,
                    );
                }
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
                let (rsa, csa) = strides(m, k, la);
                let (rsb, csb) = strides(k, n, lb);
                // SAFETY: the lengths were checked above without overflow; the strides describe row-major m×k,
                // k×n and m×n matrices inside those slices, and `c` does not alias `a` or `b`
                // (a mutable and two shared borrows).
                unsafe {
                    $f(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        if beta { 1.0 } else { 0.0 },
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
        }
    };
}

gemm_via!(f32, matrixmultiply::sgemm);
gemm_via!(f64, matrixmultiply::dgemm);

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
