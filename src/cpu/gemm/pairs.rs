//! bf16 products on CPUs with AVX512_BF16. `vdpbf16ps` takes 32-bit lanes that each hold two
//! bf16 and adds both products to an f32 lane, the high half's first. So the operands become
//! matrices of k-pairs — the value at k = 2p in the high half, 2p + 1 in the low — packed and
//! driven like f32 (`driver.rs`) into an f32 C that is rounded to bf16 once. A product of two
//! bf16 is exact in f32, so each element is the chain `acc + a_q·b_q` in k order, rounded at
//! every step: the bits of the widened f32 path, except where values are subnormal (the
//! instruction reads and writes them as zero).

use super::Layout;
use super::driver;
pub(super) use super::pack::Pair;
use super::spec::Spec;
use half::bf16;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// The padding of an odd k: −0.0 in A and +0.0 in B, whose product −0.0 leaves every sum as it
/// was (x + (−0.0) = x, signed zeros included).
const A_PAD: u16 = 0x8000;
const B_PAD: u16 = 0x0000;

/// Rows or columns converted per task.
const BAND: usize = 16;

fn pair(hi: u16, lo: u16) -> Pair {
    Pair(u32::from(hi) << 16 | u32::from(lo))
}

/// A (m×k, stored as `l`) as m rows of ⌈k/2⌉ pairs.
pub(super) fn pairs_of_a(a: &[bf16], l: Layout, (m, k): (usize, usize)) -> Vec<Pair> {
    let kp = k.div_ceil(2);
    let mut out = vec![Pair::default(); m * kp];
    if kp == 0 {
        return out;
    }
    let get = |i: usize, q: usize| -> u16 {
        if q >= k {
            return A_PAD;
        }
        match l {
            Layout::Normal => a[i * k + q].to_bits(),
            Layout::Transposed => a[q * m + i].to_bits(),
        }
    };
    out.par_chunks_mut(BAND * kp)
        .enumerate()
        .for_each(|(t, rows)| {
            let i0 = t * BAND;
            let n = rows.len() / kp;
            // Transposed A keeps a band's rows side by side in each k: read k by k.
            for p in 0..kp {
                for r in 0..n {
                    rows[r * kp + p] = pair(get(i0 + r, 2 * p), get(i0 + r, 2 * p + 1));
                }
            }
        });
    out
}

/// B (k×n, stored as `l`) as ⌈k/2⌉ rows of n pairs.
pub(super) fn pairs_of_b(b: &[bf16], l: Layout, (k, n): (usize, usize)) -> Vec<Pair> {
    let kp = k.div_ceil(2);
    let mut out = vec![Pair::default(); kp * n];
    if n == 0 {
        return out;
    }
    let get = |q: usize, j: usize| -> u16 {
        if q >= k {
            return B_PAD;
        }
        match l {
            Layout::Normal => b[q * n + j].to_bits(),
            Layout::Transposed => b[j * k + q].to_bits(),
        }
    };
    out.par_chunks_mut(BAND * n)
        .enumerate()
        .for_each(|(t, rows)| {
            let p0 = t * BAND;
            let kps = rows.len() / n;
            // Transposed B keeps a band's k side by side in each column: read column by column.
            for j in 0..n {
                for r in 0..kps {
                    let p = p0 + r;
                    rows[r * n + j] = pair(get(2 * p, j), get(2 * p + 1, j));
                }
            }
        });
    out
}

/// A subnormal f32 as a zero of its sign (the instruction's inputs and results).
#[cfg(test)]
fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// A bf16's bits (in the low 16 of `h`) as f32, subnormal as zero.
#[cfg(test)]
fn wide(h: u32) -> f32 {
    flush(f32::from_bits((h & 0xffff) << 16))
}

/// One lane of `vdpbf16ps`: the high halves' product added to `acc` first, then the low
/// halves', each a fused multiply-add rounded to nearest even, subnormal inputs and results as
/// zero (Intel's SDM; Bochs emulates it so).
#[cfg(test)]
pub(super) fn dot2(acc: f32, a: Pair, b: Pair) -> f32 {
    let acc = flush(wide(a.0 >> 16).mul_add(wide(b.0 >> 16), flush(acc)));
    flush(wide(a.0).mul_add(wide(b.0), acc))
}

#[cfg(test)]
super::kernels::portable!(portable_4x8, Pair, f32, |acc, x, y| dot2(acc, x, y));

/// The portable pair kernel, 4×8, lane by lane as the instruction computes (`dot2`): the
/// definition the SIMD kernel is tested against (products use it nowhere: widening to f32 is
/// faster without the instruction).
#[cfg(test)]
pub(super) const PORTABLE: Spec<Pair, f32> = Spec {
    name: "portable bf16-pairs 4×8",
    mr: 4,
    nr: 8,
    mc: super::kernels::PORTABLE_BLOCKS.0,
    kc: super::kernels::PORTABLE_BLOCKS.1,
    nc: super::kernels::PORTABLE_BLOCKS.2,
    run: portable_4x8,
    supported: super::kernels::always,
};

/// The SIMD pair kernel this CPU runs, if any.
pub(super) fn simd() -> Option<&'static Spec<Pair, f32>> {
    #[cfg(target_arch = "x86_64")]
    if (super::x86::AVX512BF16_12X32.supported)() {
        return Some(&super::x86::AVX512BF16_12X32);
    }
    None
}

/// What bf16 products use: 0 not yet chosen, 1 the pair kernel, 2 widening to f32.
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// The pair kernel, when this CPU has one and it beats widening to f32 on the product the f32
/// kernels are chosen on (timed once, at the first bf16 product: as for f32, features alone
/// do not tell which is faster on a given machine).
pub(super) fn kernel() -> Option<&'static Spec<Pair, f32>> {
    match CHOICE.load(Ordering::Relaxed) {
        1 => simd(),
        2 => None,
        _ => {
            let k = simd().filter(|k| beats_widening(k));
            CHOICE.store(if k.is_some() { 1 } else { 2 }, Ordering::Relaxed);
            k
        }
    }
}

/// Whether `kern` multiplies 192×512 by 512×384 bf16 faster than widening to f32 does (the
/// least of three timings each, after a warm-up).
fn beats_widening(kern: &Spec<Pair, f32>) -> bool {
    let (m, k, n) = (192, 512, 384);
    let a: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32((i % 7) as f32)).collect();
    let b: Vec<bf16> = (0..k * n).map(|i| bf16::from_f32((i % 5) as f32)).collect();
    let mut c = vec![0.0f32; m * n];
    let best = |f: &mut dyn FnMut()| {
        (0..4)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .skip(1)
            .min()
            .unwrap_or_default()
    };
    let paired = best(&mut || {
        product(
            kern,
            (m, k, n),
            (&a, Layout::Normal),
            (&b, Layout::Normal),
            false,
            &mut c,
        )
    });
    let widened = best(&mut || {
        let wa: Vec<f32> = a.iter().map(|x| x.to_f32()).collect();
        let wb: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        // SAFETY: `wa` is m×k, `wb` k×n and `c` m×n, three buffers of their own. (The driver
        // directly: `Gemm::gemm` would count these FLOPs as the caller's.)
        unsafe {
            driver::drive(
                super::select::chosen(),
                (m, k, n),
                &wa,
                Layout::Normal,
                &wb,
                Layout::Normal,
                false,
                c.as_mut_ptr(),
                true,
            )
        }
    });
    paired < widened
}

/// `c = a·b (+ c when beta)` with `kern`, C in f32 (m×n): the operands become pair matrices
/// (O(mk + kn) copies beside the O(mkn) product), then the f32 driver's blocking runs.
#[allow(clippy::too_many_arguments)] // the BLAS signature
pub(super) fn product(
    kern: &Spec<Pair, f32>,
    (m, k, n): (usize, usize, usize),
    (a, la): (&[bf16], Layout),
    (b, lb): (&[bf16], Layout),
    beta: bool,
    c: &mut [f32],
) {
    assert!(c.len() >= m * n, "gemm: operand too short");
    let (ap, bp) = rayon::join(|| pairs_of_a(a, la, (m, k)), || pairs_of_b(b, lb, (k, n)));
    // SAFETY: `ap` is m × ⌈k/2⌉ and `bp` ⌈k/2⌉ × n, both row-major; `c` holds m·n elements
    // (initialised when `beta`: the caller's) and is a borrow of its own.
    unsafe {
        driver::drive(
            kern,
            (m, k.div_ceil(2), n),
            &ap,
            Layout::Normal,
            &bp,
            Layout::Normal,
            beta,
            c.as_mut_ptr(),
            true,
        )
    }
}

/// `s` as bf16 when `E` is bf16 (the element types are one type then).
pub(super) fn as_bf16<E: 'static>(s: &[E]) -> Option<&[bf16]> {
    (std::any::TypeId::of::<E>() == std::any::TypeId::of::<bf16>())
        // SAFETY: E is bf16, so the slice's pointer, length and lifetime describe bf16s.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<bf16>(), s.len()) })
}
