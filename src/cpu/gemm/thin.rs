//! Products with at most [`ROWS`] rows of A — a decoding step's one row per sequence — without
//! packing: packing copies all of B for a single use, which at one row costs several times the
//! arithmetic. B is read once, in place. Each element is the same chain as every micro-kernel's
//! (`acc = fma(a_ip, b_pj, acc)` for p in order, from 0 or C), so the bits equal the packed
//! path's and do not depend on how the columns are split over threads.

use super::Layout;
use rayon::prelude::*;

/// The most rows of A a thin product takes.
pub(super) const ROWS: usize = 4;

/// Below this many multiply-adds a thin product runs on the calling thread. Lower than the
/// packed path's bound: a thin product streams B from memory once, so a second thread adds
/// bandwidth even to a small one (a 768 × 768 weight is 2.4 MB, ≈ 0.2 ms to read).
pub(super) const SERIAL: usize = 1 << 16;

/// Columns of C per pass over k when B is stored as used (the accumulators stay in L1).
const COLS: usize = 256;

/// Columns of C whose chains run side by side when B is stored transposed (rows of Bᵀ, each
/// read front to back).
const LANES: usize = 8;

/// Element types a thin product runs on: a fused multiply-add (the CPU's instruction where the
/// caller enables it, the correctly rounded library function elsewhere: the same bits).
pub(super) trait Fma: Copy + Default + Send + Sync {
    /// `self · b + c`, rounded once.
    fn fma(self, b: Self, c: Self) -> Self;
}

impl Fma for f32 {
    #[inline(always)]
    fn fma(self, b: f32, c: f32) -> f32 {
        self.mul_add(b, c)
    }
}

impl Fma for f64 {
    #[inline(always)]
    fn fma(self, b: f64, c: f64) -> f64 {
        self.mul_add(b, c)
    }
}

/// One product's operands; C's pointer is shared by the tasks that write disjoint columns.
struct Product<'a, T> {
    m: usize,
    k: usize,
    n: usize,
    a: &'a [T],
    la: Layout,
    b: &'a [T],
    lb: Layout,
    beta: bool,
    c: *mut T,
}

// SAFETY: tasks write disjoint column ranges of C, and the caller of `product` holds C
// exclusively for the call; the operands are shared reads.
unsafe impl<T: Sync> Sync for Product<'_, T> {}

/// `c = a·b (+ c when beta)` for m ≤ [`ROWS`], columns split over rayon's threads when
/// `parallel` and the product has at least `serial` multiply-adds.
///
/// # Safety
/// `a` and `b` hold m×k and k×n elements laid out as `la` and `lb`; `c` points to m·n writable
/// elements, initialised when `beta`, aliasing neither.
#[allow(clippy::too_many_arguments)] // the BLAS signature
pub(super) unsafe fn product<T: Fma>(
    (m, k, n): (usize, usize, usize),
    a: &[T],
    la: Layout,
    b: &[T],
    lb: Layout,
    beta: bool,
    c: *mut T,
    (parallel, serial): (bool, usize),
) {
    debug_assert!(m <= ROWS);
    let p = Product {
        m,
        k,
        n,
        a,
        la,
        b,
        lb,
        beta,
        c,
    };
    let threads = rayon::current_num_threads();
    let tasks = match parallel && m.saturating_mul(k).saturating_mul(n) >= serial {
        true => threads.min(n.div_ceil(COLS)).max(1),
        false => 1,
    };
    // Task t's columns, in whole COLS-wide passes but the last.
    let cols = |t: usize| (n.div_ceil(COLS) * t / tasks * COLS).min(n);
    if tasks == 1 {
        // SAFETY: the caller's contract; one task, all of C.
        unsafe { columns(&p, 0..n) };
    } else {
        (0..tasks).into_par_iter().for_each(|t| {
            // SAFETY: columns [cols(t), cols(t + 1)) of C are this task's alone.
            unsafe { columns(&p, cols(t)..cols(t + 1)) }
        });
    }
}

/// Columns `cols` of C, with the CPU's FMA instruction where it has one.
///
/// # Safety
/// As [`product`]'s, and no one else writes columns `cols` of C meanwhile.
unsafe fn columns<T: Fma>(p: &Product<T>, cols: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; the rest is the caller's contract.
        return unsafe { columns_avx2(p, cols) };
    }
    // SAFETY: the caller's contract.
    unsafe { columns_any(p, cols) }
}

/// [`columns_any`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA; otherwise as [`columns`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2<T: Fma>(p: &Product<T>, cols: std::ops::Range<usize>) {
    // SAFETY: the caller's contract.
    unsafe { columns_any(p, cols) }
}

/// # Safety
/// As [`columns`].
#[inline(always)]
unsafe fn columns_any<T: Fma>(p: &Product<T>, cols: std::ops::Range<usize>) {
    let (m, k, n) = (p.m, p.k, p.n);
    let at = |i: usize, q: usize| match p.la {
        Layout::Normal => p.a[i * k + q],
        Layout::Transposed => p.a[q * m + i],
    };
    // SAFETY (both closures): (i, j) lies inside C, in this task's columns; C is initialised
    // when `beta`.
    let start = |i: usize, j: usize| match p.beta {
        true => unsafe { p.c.add(i * n + j).read() },
        false => T::default(),
    };
    let store = |i: usize, j: usize, v: T| unsafe { p.c.add(i * n + j).write(v) };
    match p.lb {
        // B row-major k×n: row q of B scales into every accumulator of the pass.
        Layout::Normal => {
            let mut acc = [[T::default(); COLS]; ROWS];
            for j0 in cols.clone().step_by(COLS) {
                let w = COLS.min(cols.end - j0);
                for (i, row) in acc.iter_mut().enumerate().take(m) {
                    for (j, v) in row[..w].iter_mut().enumerate() {
                        *v = start(i, j0 + j);
                    }
                }
                for q in 0..k {
                    let brow = &p.b[q * n + j0..][..w];
                    for (i, row) in acc.iter_mut().enumerate().take(m) {
                        let x = at(i, q);
                        for (v, &bv) in row[..w].iter_mut().zip(brow) {
                            *v = x.fma(bv, *v);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate().take(m) {
                    for (j, &v) in row[..w].iter().enumerate() {
                        store(i, j0 + j, v);
                    }
                }
            }
        }
        // B stored n×k: column j of B is row j of the buffer, read front to back.
        Layout::Transposed => {
            for j0 in cols.clone().step_by(LANES) {
                let w = LANES.min(cols.end - j0);
                let rows: [&[T]; LANES] =
                    std::array::from_fn(|t| &p.b[(j0 + t.min(w - 1)) * k..][..k]);
                for i in 0..m {
                    let mut acc: [T; LANES] = std::array::from_fn(|t| match t < w {
                        true => start(i, j0 + t),
                        false => T::default(),
                    });
                    for q in 0..k {
                        let x = at(i, q);
                        for (v, row) in acc.iter_mut().zip(&rows) {
                            *v = x.fma(row[q], *v);
                        }
                    }
                    for (t, &v) in acc.iter().enumerate().take(w) {
                        store(i, j0 + t, v);
                    }
                }
            }
        }
    }
}
