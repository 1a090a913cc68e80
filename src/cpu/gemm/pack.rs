//! Packing: copies of the operands' current blocks in the order a micro-kernel reads them.
//! A's block becomes panels of `mr` rows, each stored k-major (`[kc][mr]`); B's block becomes
//! panels of `nr` columns, each k-major (`[kc][nr]`). Rows and columns past the matrix are
//! zeros: the kernel computes them into a scratch tile whose padding is never stored.

use super::Layout;
use std::cell::RefCell;

/// Element types whose packing buffers each thread keeps between products (growing only),
/// so a product allocates, zeroes and faults in no fresh memory for them.
pub(super) trait Packable: Copy + Default + Send + Sync + 'static {
    /// What C holds (what the kernel accumulates in).
    type Acc: Copy + Default + Send + Sync + 'static;

    /// Runs `f` on this thread's buffer `which` (0: A, 1: B) of at least `len` elements
    /// (stale contents: packing writes every element it reads), or on a fresh one while the
    /// thread's own is in use.
    fn with_buffer<R>(which: usize, len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! packable {
    ($t:ty, $acc:ty, $a:ident, $b:ident) => {
        thread_local! {
            static $a: RefCell<Vec<$t>> = const { RefCell::new(Vec::new()) };
            static $b: RefCell<Vec<$t>> = const { RefCell::new(Vec::new()) };
        }
        impl Packable for $t {
            type Acc = $acc;
            fn with_buffer<R>(which: usize, len: usize, f: impl FnOnce(&mut [$t]) -> R) -> R {
                let cell = if which == 0 { &$a } else { &$b };
                cell.with(|c| match c.try_borrow_mut() {
                    Ok(mut v) => {
                        if v.len() < len {
                            v.resize(len, <$t>::default());
                        }
                        f(&mut v[..len])
                    }
                    Err(_) => f(&mut vec![<$t>::default(); len]),
                })
            }
        }
    };
}

packable!(f32, f32, PACK_A_F32, PACK_B_F32);
packable!(f64, f64, PACK_A_F64, PACK_B_F64);
packable!(Pair, f32, PACK_A_PAIR, PACK_B_PAIR);

/// Two bf16 of one row (A) or column (B) at k = 2p (high half) and 2p + 1 (low half): the
/// element of the AVX512_BF16 kernel's panels (`pairs.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub(super) struct Pair(pub(super) u32);

/// Where a block starts and how big it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    /// First row (A) or column (B) of the block.
    pub at: usize,
    /// Rows (A) or columns (B) in the block.
    pub len: usize,
    /// First k of the block.
    pub k0: usize,
    /// k values in the block.
    pub kc: usize,
}

/// Packs rows `blk.at..blk.at + blk.len` and k values `blk.k0..blk.k0 + blk.kc` of the m×k
/// operand `a` (stored as `l`) into `out`, `mr` rows per panel.
pub(super) fn pack_a<T: Copy + Default + 'static>(
    a: &[T],
    l: Layout,
    (m, k): (usize, usize),
    blk: Block,
    mr: usize,
    out: &mut [T],
) {
    if l == Layout::Transposed {
        // Stored k×m: element (i, q) at q·m + i. Each k's row holds the block's rows side by
        // side: read once, left to right, into every panel (reading panel by panel would jump
        // a whole row of A per k, a page apart on wide operands).
        for q in 0..blk.kc {
            let row = &a[(blk.k0 + q) * m + blk.at..][..blk.len];
            match mr {
                32 => spread::<T, 32>(row, q, blk.kc, out),
                16 => spread::<T, 16>(row, q, blk.kc, out),
                12 => spread::<T, 12>(row, q, blk.kc, out),
                6 => spread::<T, 6>(row, q, blk.kc, out),
                4 => spread::<T, 4>(row, q, blk.kc, out),
                _ => {
                    for (p, src) in row.chunks(mr).enumerate() {
                        copy_padded(&mut out[p * mr * blk.kc + q * mr..][..mr], src);
                    }
                }
            }
        }
        return;
    }
    // Row-major m×k: element (i, q) at i·k + q.
    for (p, panel) in out.chunks_mut(mr * blk.kc).enumerate() {
        let r0 = blk.at + p * mr;
        let rows = mr.min(blk.at + blk.len - r0);
        match (mr, rows == mr) {
            (12, true) => gather::<T, 12>(a, (r0, k, blk.k0), blk.kc, panel),
            (6, true) => gather::<T, 6>(a, (r0, k, blk.k0), blk.kc, panel),
            (4, true) => gather::<T, 4>(a, (r0, k, blk.k0), blk.kc, panel),
            _ => {
                for r in 0..mr {
                    for q in 0..blk.kc {
                        panel[q * mr + r] = if r < rows {
                            a[(r0 + r) * k + blk.k0 + q]
                        } else {
                            T::default()
                        };
                    }
                }
            }
        }
    }
}

/// Row `q` of a transposed A's block into place `q` of each of its `N`-row panels (`kc` long
/// each), the last panel zero-padded.
#[inline(always)]
fn spread<T: Copy + Default, const N: usize>(row: &[T], q: usize, kc: usize, out: &mut [T]) {
    let mut chunks = row.chunks_exact(N);
    for (p, src) in (&mut chunks).enumerate() {
        if let (Ok(d), Ok(s)) = (
            <&mut [T; N]>::try_from(&mut out[p * N * kc + q * N..][..N]),
            <&[T; N]>::try_from(src),
        ) {
            *d = *s;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let p = row.len() / N;
        copy_padded(&mut out[p * N * kc + q * N..][..N], rest);
    }
}

/// Packs panel `p` (`nr` columns from `blk.at + p·nr`) of columns `blk.at..blk.at + blk.len`
/// and k values `blk.k0..blk.k0 + blk.kc` of the k×n operand `b` (stored as `l`).
pub(super) fn pack_b_panel<T: Copy + Default + 'static>(
    b: &[T],
    l: Layout,
    (k, n): (usize, usize),
    blk: Block,
    nr: usize,
    p: usize,
    panel: &mut [T],
) {
    let c0 = blk.at + p * nr;
    let cols = nr.min(blk.at + blk.len - c0);
    match l {
        // Row-major k×n: element (q, j) at q·n + j, so each k holds `nr` neighbours.
        Layout::Normal => match (nr, cols == nr) {
            (32, true) => strided::<T, 32>(b, (blk.k0 * n + c0, n), blk.kc, panel),
            (16, true) => strided::<T, 16>(b, (blk.k0 * n + c0, n), blk.kc, panel),
            (8, true) => strided::<T, 8>(b, (blk.k0 * n + c0, n), blk.kc, panel),
            _ => {
                for q in 0..blk.kc {
                    let src = &b[(blk.k0 + q) * n + c0..][..cols];
                    copy_padded(&mut panel[q * nr..][..nr], src);
                }
            }
        },
        // Stored n×k: element (q, j) at j·k + q, so a full panel is A's row gather.
        Layout::Transposed => match (nr, cols == nr) {
            (32, true) => gather::<T, 32>(b, (c0, k, blk.k0), blk.kc, panel),
            (16, true) => gather::<T, 16>(b, (c0, k, blk.k0), blk.kc, panel),
            (8, true) => gather::<T, 8>(b, (c0, k, blk.k0), blk.kc, panel),
            _ => {
                for c in 0..nr {
                    if c < cols {
                        let col = &b[(c0 + c) * k + blk.k0..][..blk.kc];
                        for (q, &v) in col.iter().enumerate() {
                            panel[q * nr + c] = v;
                        }
                    } else {
                        for q in 0..blk.kc {
                            panel[q * nr + c] = T::default();
                        }
                    }
                }
            }
        },
    }
}

/// `src` into the front of `dst`, zeros after it (a panel's ragged edge).
#[inline(always)]
fn copy_padded<T: Copy + Default>(dst: &mut [T], src: &[T]) {
    dst[..src.len()].copy_from_slice(src);
    dst[src.len()..].fill(T::default());
}

/// A full panel of `N` neighbours per k, each k's `N` values `stride` apart from `at` on:
/// fixed-size copies (inline vector moves, not a call per k).
#[inline(always)]
fn strided<T: Copy, const N: usize>(
    src: &[T],
    (at, stride): (usize, usize),
    kc: usize,
    panel: &mut [T],
) {
    for (q, dst) in panel.chunks_exact_mut(N).take(kc).enumerate() {
        if let (Ok(d), Ok(s)) = (
            <&mut [T; N]>::try_from(dst),
            <&[T; N]>::try_from(&src[at + q * stride..][..N]),
        ) {
            *d = *s;
        }
    }
}

/// A full panel of `R` rows of a row-major A (row `r0` on, `k` apart, from column `k0`):
/// for each k, the `R` rows' values side by side (f32 with AVX2: transposed in registers).
#[inline(always)]
fn gather<T: Copy + Default + 'static, const R: usize>(
    a: &[T],
    (r0, k, k0): (usize, usize, usize),
    kc: usize,
    panel: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(a), Some(p)) = (as_f32(a), as_f32_mut(panel))
        && super::pack_x86::gather_f32::<R>(a, (r0, k, k0), kc, p)
    {
        return;
    }
    let rows: [&[T]; R] = std::array::from_fn(|r| &a[(r0 + r) * k + k0..][..kc]);
    for (q, dst) in panel.chunks_exact_mut(R).take(kc).enumerate() {
        for (d, row) in dst.iter_mut().zip(&rows) {
            *d = row[q];
        }
    }
}

/// `s` as f32 elements when `T` is f32 (the element types are one type then).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_f32<T: 'static>(s: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32, so the slice's pointer, length and lifetime describe f32s.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// [`as_f32`] for a slice being written.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_f32_mut<T: 'static>(s: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32, so the slice's pointer, length and lifetime describe f32s.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}
