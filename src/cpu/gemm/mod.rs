//! Matrix products: rewind's own packed GEMM (`driver.rs`, `pack.rs`, `pack_x86.rs`) around micro-kernels
//! (`kernels.rs`, `x86.rs`: AVX-512, AVX2 + FMA, portable). Every kernel computes each element
//! of C as one fused multiply-add per k, in k order, so a product's bits depend on its operands
//! only: not on the kernel, the thread count or the machine. Which kernel runs is timed at the
//! first product (`select.rs`). f16 and bf16 operands are widened to f32, multiplied with f32
//! accumulation and rounded once (`widened.rs`; bf16 with AVX512_BF16 as pairs, `pairs.rs`).
//! Measured against `matrixmultiply`, the `gemm` crate and OpenBLAS in
//! `benches/gemm_kernels.rs` and `rewind bench-core`.

use crate::dtype::Element;
use half::{bf16, f16};

mod driver;
mod kernels;
mod pack;
#[cfg(target_arch = "x86_64")]
mod pack_x86;
mod pairs;
mod select;
mod spec;
mod thin;
mod widened;
#[cfg(target_arch = "x86_64")]
mod x86;

/// An f32 micro-kernel this CPU runs (for benchmarks and tests: products use
/// [`Kernel::chosen`], and every kernel gives the same bits).
#[derive(Debug, Clone, Copy)]
pub struct Kernel(usize);

impl Kernel {
    /// The kernels this CPU supports, widest first.
    pub fn available() -> Vec<Kernel> {
        (0..kernels::F32.len())
            .filter(|&i| (kernels::F32[i].supported)())
            .map(Kernel)
            .collect()
    }

    /// The kernel f32 products use: the fastest supported one, timed at the first product.
    pub fn chosen() -> Kernel {
        let k = select::chosen();
        Kernel(
            kernels::F32
                .iter()
                .position(|s| std::ptr::eq(s, k))
                .unwrap_or(0),
        )
    }

    /// Its name, e.g. `"avx2 6×16"`.
    pub fn name(&self) -> &'static str {
        kernels::F32[self.0].name
    }

    /// Makes every later f32 product use this kernel (results are unchanged: speed only).
    pub fn use_for_all(&self) {
        select::choose(self.0);
    }

    /// Seconds one thread takes for the product the choice is timed on (192×512×384).
    pub fn time_one_thread(&self) -> f64 {
        select::time(&kernels::F32[self.0])
    }

    /// [`Gemm::gemm`] for f32 with this kernel.
    #[allow(clippy::too_many_arguments)] // the BLAS signature: sizes, operands, layouts
    pub fn gemm(
        &self,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        la: Layout,
        b: &[f32],
        lb: Layout,
        beta: bool,
        c: &mut [f32],
    ) {
        check_lengths(m, k, n, a.len(), b.len(), c.len());
        count(m, k, n);
        // SAFETY: lengths checked; `c` is a mutable borrow, initialised, aliasing neither.
        unsafe {
            driver::drive(
                &kernels::F32[self.0],
                (m, k, n),
                a,
                la,
                b,
                lb,
                beta,
                c.as_mut_ptr(),
                true,
            )
        }
    }
}

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

/// `batch` independent products `c_i = a_i·b_i` (m×k times k×n into m×n, C holding them in
/// turn; A or B shared by all when `a_shared`/`b_shared`), written over C's uninitialised
/// memory (never zeroed first). Products too small to split run in parallel over the batch
/// instead, each on one thread: the bits are those of one at a time.
#[allow(clippy::too_many_arguments)] // the BLAS signature, batched
pub fn batch<E: Gemm>(
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a: &[E],
    la: Layout,
    a_shared: bool,
    b: &[E],
    lb: Layout,
    b_shared: bool,
    c: &mut [std::mem::MaybeUninit<E>],
) {
    use rayon::prelude::*;
    let one = |i: usize, ci: &mut [std::mem::MaybeUninit<E>]| {
        let ai = if a_shared {
            a
        } else {
            &a[i * m * k..(i + 1) * m * k]
        };
        let bi = if b_shared {
            b
        } else {
            &b[i * k * n..(i + 1) * k * n]
        };
        E::gemm_overwrite(m, k, n, ai, la, bi, lb, ci);
    };
    let small = m.saturating_mul(k).saturating_mul(n) < driver::SERIAL;
    if batch > 1 && small && m * n > 0 && rayon::current_num_threads() > 1 {
        c.par_chunks_mut(m * n)
            .take(batch)
            .enumerate()
            .for_each(|(i, ci)| one(i, ci));
    } else {
        for (i, ci) in c.chunks_mut((m * n).max(1)).take(batch).enumerate() {
            one(i, ci);
        }
    }
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

/// `c = a·b (+ c when beta)` through the kernel `$kernel()` gives (a thin product without
/// packing for at most `thin::ROWS` rows of A), on rayon's threads. Also implements [`Gemm`].
macro_rules! via_kernels {
    ($name:ident, $t:ty, $kernel:expr) => {
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
            if m <= thin::ROWS && k > 0 {
                // SAFETY: the caller's contract.
                return unsafe {
                    thin::product((m, k, n), a, la, b, lb, beta, c, (true, thin::SERIAL))
                };
            }
            // SAFETY: the caller's contract.
            unsafe { driver::drive($kernel, (m, k, n), a, la, b, lb, beta, c, true) }
        }
        gemm_via!($t, $name);
    };
}

via_kernels!(f32_backend, f32, select::chosen());
via_kernels!(f64_backend, f64, f64_kernel());

/// The f64 kernel: the first this CPU supports.
fn f64_kernel() -> &'static spec::Spec<f64> {
    kernels::F64
        .iter()
        .find(|k| (k.supported)())
        .unwrap_or(&kernels::F64[kernels::F64.len() - 1])
}

macro_rules! widened_gemm {
    ($t:ty) => {
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
                widened::product((m, k, n), (a, la), (b, lb), widened::Out::Uninit(c));
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
                widened::product((m, k, n), (a, la), (b, lb), widened::Out::Init(c, beta));
            }
        }
    };
}
widened_gemm!(f16);
widened_gemm!(bf16);

#[cfg(all(test, target_arch = "x86_64"))]
mod emulated;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pairs;
