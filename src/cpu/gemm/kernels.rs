//! The micro-kernels this build has, in the order a choice prefers them, and the portable
//! ones (every CPU). Like every kernel ([`super::spec`]), they give the same bits.

use super::spec::Spec;

/// A portable 4×8 kernel: each element of C (type `$c`) steps as `$acc = $step` with `$x`, `$y`
/// the panels' values (type `$t`) at its row and column, k by k. For f32 and f64 the step is
/// `mul_add` (an FMA instruction where the CPU has one, compiled in by `$feature`; the correctly
/// rounded library function elsewhere: same bits).
macro_rules! portable {
    ($name:ident, $t:ty, $c:ty, |$acc:ident, $x:ident, $y:ident| $step:expr $(, $feature:literal)?) => {
        $(#[target_feature(enable = $feature)])?
        #[allow(unsafe_op_in_unsafe_fn)]
        unsafe extern "C" fn $name(kc: usize, a: *const $t, b: *const $t, c: *mut $c, ldc: usize, zero: bool) {
            const MR: usize = 4;
            const NR: usize = 8;
            let mut acc = [[<$c>::default(); NR]; MR];
            if !zero {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = *c.add(i * ldc + j);
                    }
                }
            }
            for q in 0..kc {
                let (ap, bp) = (a.add(q * MR), b.add(q * NR));
                for (i, row) in acc.iter_mut().enumerate() {
                    let $x = *ap.add(i);
                    for (j, v) in row.iter_mut().enumerate() {
                        let ($acc, $y) = (*v, *bp.add(j));
                        *v = $step;
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    *c.add(i * ldc + j) = *v;
                }
            }
        }
    };
}
#[cfg(test)] // the bf16 pair definition (`pairs.rs`)
pub(super) use portable;

portable!(portable_f32, f32, f32, |acc, x, y| x.mul_add(y, acc));
portable!(portable_f64, f64, f64, |acc, x, y| x.mul_add(y, acc));
#[cfg(target_arch = "x86_64")]
portable!(
    portable_fma_f32,
    f32,
    f32,
    |acc, x, y| x.mul_add(y, acc),
    "fma"
);
#[cfg(target_arch = "x86_64")]
portable!(
    portable_fma_f64,
    f64,
    f64,
    |acc, x, y| x.mul_add(y, acc),
    "fma"
);

pub(super) fn always() -> bool {
    true
}

#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    std::arch::is_x86_feature_detected!("fma")
}

pub(super) const PORTABLE_BLOCKS: (usize, usize, usize) = (64, 256, 1024);

/// Every f32 kernel, fastest first where the CPU runs several.
pub(super) static F32: &[Spec<f32>] = &[
    #[cfg(target_arch = "x86_64")]
    super::x86::AVX512_12X32,
    #[cfg(target_arch = "x86_64")]
    super::x86::AVX2_6X16,
    #[cfg(target_arch = "x86_64")]
    Spec {
        name: "portable fma 4×8",
        mr: 4,
        nr: 8,
        mc: PORTABLE_BLOCKS.0,
        kc: PORTABLE_BLOCKS.1,
        nc: PORTABLE_BLOCKS.2,
        run: portable_fma_f32,
        supported: has_fma,
    },
    Spec {
        name: "portable 4×8",
        mr: 4,
        nr: 8,
        mc: PORTABLE_BLOCKS.0,
        kc: PORTABLE_BLOCKS.1,
        nc: PORTABLE_BLOCKS.2,
        run: portable_f32,
        supported: always,
    },
];

/// Every f64 kernel (f64 serves gradient checks: the portable ones suffice).
pub(super) static F64: &[Spec<f64>] = &[
    #[cfg(target_arch = "x86_64")]
    Spec {
        name: "portable fma 4×8",
        mr: 4,
        nr: 8,
        mc: PORTABLE_BLOCKS.0,
        kc: PORTABLE_BLOCKS.1,
        nc: PORTABLE_BLOCKS.2,
        run: portable_fma_f64,
        supported: has_fma,
    },
    Spec {
        name: "portable 4×8",
        mr: 4,
        nr: 8,
        mc: PORTABLE_BLOCKS.0,
        kc: PORTABLE_BLOCKS.1,
        nc: PORTABLE_BLOCKS.2,
        run: portable_f64,
        supported: always,
    },
];
