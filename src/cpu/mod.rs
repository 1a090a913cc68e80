//! CPU kernels over slices: elementwise maps, broadcasting, reductions and GEMM.
//! Tiny inputs run inline; large ones split into fixed-size chunks on rayon, so results do not
//! depend on the number of threads (same seed, same bits).

pub mod broadcast;
pub mod gemm;
pub mod reduce;

use crate::dtype::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Elements per parallel chunk; also the size below which kernels stay on one thread.
pub const CHUNK: usize = 1 << 14;

/// Worker threads the kernels split large inputs over (rayon's pool; `RAYON_NUM_THREADS` sets it).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Elements converted at once when an element type widens (f16 → f32).
const WIDE: usize = 256;

/// `n` zeros, or [`Error::OutOfMemory`] naming `op` when the allocator refuses (instead of
/// aborting the process). Fresh pages come zeroed from the OS, so this costs no memset.
pub fn zeroed<E: Element>(op: &'static str, n: usize) -> Result<Vec<E>> {
    let oom = || Error::OutOfMemory {
        op,
        bytes: n.saturating_mul(std::mem::size_of::<E>()),
    };
    if n == 0 || std::mem::size_of::<E>() == 0 {
        return Ok(vec![E::default(); n]);
    }
    let layout = std::alloc::Layout::array::<E>(n).map_err(|_| oom())?;
    // SAFETY: `layout` has a non-zero size (n > 0 and E is not zero-sized, checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<E>();
    if ptr.is_null() {
        return Err(oom());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `[E; n]`, so length and
    // capacity `n` are right; every `E` is `Zeroable` (all-zero bits are a valid value, 0.0), so
    // all `n` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// `n` copies of `value`, written once (no zeroing pass first), in parallel when large;
/// errors as [`zeroed`].
pub fn filled<E: Element>(op: &'static str, n: usize, value: E) -> Result<Vec<E>> {
    build(op, n, |o, _| {
        simd(
            #[inline(always)]
            || {
                for o in o.iter_mut() {
                    o.write(value);
                }
            },
        )
    })
}

/// An empty vector with room for `n` elements, or [`Error::OutOfMemory`] naming `op`.
pub fn with_capacity<T>(op: &'static str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        op,
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(v)
}

/// `n` elements written by `fill(chunk, start)`, which writes every element of the chunk that
/// starts at element `start` (chunks of [`CHUNK`] in parallel above that size): no zeroing pass
/// first, since reused allocator memory is not free to zero.
fn build<E: Element>(
    op: &'static str,
    n: usize,
    fill: impl Fn(&mut [std::mem::MaybeUninit<E>], usize) + Sync,
) -> Result<Vec<E>> {
    let mut out = with_capacity::<E>(op, n)?;
    let spare = &mut out.spare_capacity_mut()[..n];
    if n <= CHUNK {
        fill(spare, 0);
    } else {
        spare
            .par_chunks_mut(CHUNK)
            .with_min_len(8)
            .enumerate()
            .for_each(|(i, c)| fill(c, i * CHUNK));
    }
    // SAFETY: the capacity is at least n and `fill` wrote each of the n elements (every chunk
    // of `spare` was handed to it once); E is Copy, so a panic inside leaves nothing to drop.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// Whether this CPU has AVX2 and FMA: elementwise loops then run compiled for them (8 lanes
/// instead of SSE2's 4). The arithmetic is the same IEEE operations (no fused multiply-adds
/// are introduced), so results are bit-identical either way.
#[cfg(target_arch = "x86_64")]
fn wide_simd() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether this CPU has AVX-512 (F, BW, DQ, VL): elementwise loops then run 16 lanes wide,
/// with the same IEEE operations, so the same bits as [`wide_simd`]'s.
#[cfg(target_arch = "x86_64")]
fn widest_simd() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        wide_simd()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
    })
}

/// Runs `body` compiled for AVX-512 or AVX2 + FMA where the CPU has them (see [`wide_simd`]).
#[inline(always)]
pub(crate) fn simd<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if widest_simd() {
            // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL, AVX2 and FMA (checked at run time
            // just above), which is all `#[target_feature]` requires of the caller.
            return unsafe { avx512(body) };
        }
        if wide_simd() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above), which is
            // all `#[target_feature]` requires of the caller.
            return unsafe { avx2(body) };
        }
    }
    body()
}

/// `f(r)` for each of `rows` rows of `width` elements, on rayon above [`CHUNK`] elements in
/// all (fixed blocks of rows: each row's result depends on that row only).
pub fn map_rows<R: Send>(rows: usize, width: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if rows.saturating_mul(width) <= CHUNK {
        return (0..rows).map(f).collect();
    }
    let per = (CHUNK / width.max(1)).max(1);
    (0..rows.div_ceil(per))
        .into_par_iter()
        .flat_map_iter(|b| (b * per..((b + 1) * per).min(rows)).map(&f))
        .collect()
}

/// Lanes of [`lane_sum`].
const LANES: usize = 8;

/// Σ f(k) for k < n in a fixed order — eight interleaved partial sums, combined pairwise —
/// so the loop vectorises and gives the same bits whether it does or not, on any CPU.
#[inline(always)]
pub(crate) fn lane_sum<C: crate::dtype::Real>(n: usize, f: impl Fn(usize) -> C) -> C {
    let mut acc = [C::zero(); LANES];
    let whole = n / LANES * LANES;
    for k in (0..whole).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(k + l);
        }
    }
    for k in whole..n {
        acc[k - whole] += f(k);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// [`lane_sum`] of `f(x)` over `xs`, the same bits: `f` runs over blocks of 256 into a
/// stack buffer (a plain loop the vectoriser turns into vector code, branches of `f` included),
/// then the block joins the eight lanes in order.
#[inline(always)]
pub(crate) fn lane_sum_map<E: crate::dtype::Element>(xs: &[E], f: impl Fn(E::C) -> E::C) -> E::C {
    use num_traits::Zero;
    const BLOCK: usize = 256;
    let mut acc = [E::C::zero(); LANES];
    let mut buf = [E::C::zero(); BLOCK];
    for block in xs.chunks(BLOCK) {
        let vals = &mut buf[..block.len()];
        for (b, x) in vals.iter_mut().zip(block) {
            *b = f(x.to_c());
        }
        // Blocks start at multiples of 8: element k of the row goes to lane k mod 8.
        let mut lanes = vals.chunks_exact(LANES);
        for chunk in &mut lanes {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *a += *v;
            }
        }
        for (a, v) in acc.iter_mut().zip(lanes.remainder()) {
            *a += *v;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// The largest of `xs` (−∞ when empty), NaN when any is NaN: eight lanes of
/// branch-free selects, so the loop vectorises (a max is exact: the order cannot change it).
#[inline(always)]
pub(crate) fn lane_max<E: crate::dtype::Element>(xs: &[E]) -> E::C {
    use num_traits::Float;
    let pick = |m: E::C, v: E::C| if v > m || v.is_nan() { v } else { m };
    let mut acc = [E::C::neg_infinity(); LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a = pick(*a, v.to_c());
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = pick(*a, v.to_c());
    }
    acc.into_iter().fold(E::C::neg_infinity(), pick)
}

/// `out[i] = f(x[i])`; `op` names the caller in an out-of-memory error.
pub fn map<E: Element>(
    op: &'static str,
    x: &[E],
    f: impl Fn(E::C) -> E::C + Sync,
) -> Result<Vec<E>> {
    if !E::WIDENS {
        return build(op, x.len(), |o, start| {
            let x = &x[start..start + o.len()];
            simd(
                #[inline(always)]
                || {
                    for (o, &x) in o.iter_mut().zip(x) {
                        o.write(E::from_c(f(x.to_c())));
                    }
                },
            )
        });
    }
    let mut out = zeroed(op, x.len())?;
    let run = |(o, i): (&mut [E], &[E])| {
        simd(
            #[inline(always)]
            || map_into(o, i, &f),
        )
    };
    if x.len() <= CHUNK {
        run((&mut out, x));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(run);
    }
    Ok(out)
}

/// `o[i] = f(x[i])` on equal-length slices, converting f16 in chunks.
#[inline(always)]
fn map_into<E: Element>(o: &mut [E], x: &[E], f: &impl Fn(E::C) -> E::C) {
    if E::WIDENS {
        let mut buf = [<E::C as num_traits::Zero>::zero(); WIDE];
        for (o, x) in o.chunks_mut(WIDE).zip(x.chunks(WIDE)) {
            let b = &mut buf[..x.len()];
            E::widen_slice(x, b);
            b.iter_mut().for_each(|v| *v = f(*v));
            E::narrow_slice(b, o);
        }
        return;
    }
    for (o, &x) in o.iter_mut().zip(x) {
        *o = E::from_c(f(x.to_c()));
    }
}

/// `o[i] = f(a[i], b[i])` on equal-length slices, converting f16 in chunks.
#[inline(always)]
pub(crate) fn zip_into<E: Element>(o: &mut [E], a: &[E], b: &[E], f: &impl Fn(E::C, E::C) -> E::C) {
    if !E::WIDENS {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = E::from_c(f(a.to_c(), b.to_c()));
        }
        return;
    }
    let zero = <E::C as num_traits::Zero>::zero();
    let (mut wa, mut wb) = ([zero; WIDE], [zero; WIDE]);
    for ((o, a), b) in o.chunks_mut(WIDE).zip(a.chunks(WIDE)).zip(b.chunks(WIDE)) {
        let (x, y) = (&mut wa[..a.len()], &mut wb[..a.len()]);
        E::widen_slice(a, x);
        E::widen_slice(b, y);
        x.iter_mut().zip(y.iter()).for_each(|(x, &y)| *x = f(*x, y));
        E::narrow_slice(x, o);
    }
}

/// `out[i] = f(a[i], b[i])` for equal-length slices; `op` names the caller in an
/// out-of-memory error.
pub fn zip<E: Element>(
    op: &'static str,
    a: &[E],
    b: &[E],
    f: impl Fn(E::C, E::C) -> E::C + Sync,
) -> Result<Vec<E>> {
    if !E::WIDENS && a.len() == b.len() {
        return build(op, a.len(), |o, start| {
            let (a, b) = (&a[start..start + o.len()], &b[start..start + o.len()]);
            simd(
                #[inline(always)]
                || {
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        o.write(E::from_c(f(a.to_c(), b.to_c())));
                    }
                },
            )
        });
    }
    let mut out = zeroed(op, a.len())?;
    let run = |((o, a), b): ((&mut [E], &[E]), &[E])| {
        simd(
            #[inline(always)]
            || zip_into(o, a, b, &f),
        )
    };
    if a.len() <= CHUNK {
        run(((&mut out, a), b));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(run);
    }
    Ok(out)
}

/// `a[i] = f(a[i], b[i])` in place.
pub fn zip_assign<E: Element>(a: &mut [E], b: &[E], f: impl Fn(E::C, E::C) -> E::C + Sync) {
    let run = |(a, b): (&mut [E], &[E])| {
        simd(
            #[inline(always)]
            || {
                for (a, &b) in a.iter_mut().zip(b) {
                    *a = E::from_c(f(a.to_c(), b.to_c()));
                }
            },
        )
    };
    if a.len() <= CHUNK {
        run((a, b));
    } else {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(run);
    }
}

/// Runs `f(row_index, out_row)` for every `width`-long row of `out`, in parallel when large.
pub fn rows_mut<E: Send>(out: &mut [E], width: usize, f: impl Fn(usize, &mut [E]) + Sync) {
    if width == 0 {
        return;
    }
    if out.len() <= CHUNK {
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        let rows_per = (CHUNK / width).max(1);
        out.par_chunks_mut(rows_per * width)
            .enumerate()
            .for_each(|(c, block)| {
                for (r, row) in block.chunks_mut(width).enumerate() {
                    f(c * rows_per + r, row);
                }
            });
    }
}

/// The offset of the first element of row `r` (rows run along the last dim of `shape`) in a
/// buffer laid out with `strides` (one per dim of `shape`; 0 where broadcast).
pub(crate) fn row_base(mut r: usize, shape: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for d in (0..shape.len().saturating_sub(1)).rev() {
        off += (r % shape[d]) * strides[d];
        r /= shape[d];
    }
    off
}

#[cfg(test)]
mod tests {
    use crate::dtype::Real;

    #[test]
    fn lane_sum_map_adds_in_lane_sums_order_bit_for_bit() {
        // Lengths around the 8 lanes and the 256-element blocks; values whose sums round.
        for n in [0, 1, 7, 8, 9, 255, 256, 257, 263, 600, 50_257] {
            let xs: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1000) as f32) * 0.013 - 6.5)
                .collect();
            let f = |v: f32| (v - 1.5).exp_k();
            let want = super::lane_sum(n, |k| f(xs[k]));
            let got = super::lane_sum_map(&xs, f);
            assert_eq!(got.to_bits(), want.to_bits(), "n = {n}");
        }
    }

    #[test]
    fn lane_max_is_the_rows_max_and_nan_wins() {
        let fold = |xs: &[f32]| {
            xs.iter().fold(
                f32::NEG_INFINITY,
                |m, &v| {
                    if v > m || v.is_nan() { v } else { m }
                },
            )
        };
        for n in [0usize, 1, 5, 8, 13, 64, 1001] {
            let mut xs: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32) - 50.0).collect();
            assert_eq!(
                super::lane_max(&xs).to_bits(),
                fold(&xs).to_bits(),
                "n = {n}"
            );
            if n > 3 {
                xs[n - 2] = f32::NAN;
                assert!(
                    super::lane_max(&xs).is_nan(),
                    "n = {n}: a NaN anywhere gives NaN"
                );
                xs.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                assert_eq!(super::lane_max(&xs), f32::NEG_INFINITY);
            }
        }
    }
}
