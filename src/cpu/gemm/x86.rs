//! x86-64 f32 micro-kernels: AVX2 + FMA (6×16: twelve 8-lane accumulators) and AVX-512 (12×32:
//! twenty-four 16-lane accumulators). Each element is one FMA per k in k order, as every
//! kernel computes it ([`super::spec`]).

use super::spec::Spec;
use std::arch::x86_64::*;

/// Defines a kernel body over `$rows` rows of `$vecs` vectors, given the vector type's load,
/// store, zero, broadcast and fma.
macro_rules! tile_kernel {
    ($name:ident, $feature:literal, $rows:literal, $vecs:literal, $lanes:literal,
     $load:ident, $store:ident, $zero:ident, $bcast:ident, $fma:ident) => {
        #[target_feature(enable = $feature)]
        #[allow(unsafe_op_in_unsafe_fn)]
        unsafe fn $name(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            zero: bool,
        ) {
            const NR: usize = $vecs * $lanes;
            let mut acc = [[$zero(); $vecs]; $rows];
            if !zero {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = $load(c.add(i * ldc + v * $lanes));
                    }
                }
            }
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                let mut bv = [$zero(); $vecs];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = $load(b.add(v * $lanes));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = $bcast(*a.add(i));
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = $fma(x, bv[v], *r);
                    }
                }
                a = a.add($rows);
                b = b.add(NR);
            }
            for (i, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    $store(c.add(i * ldc + v * $lanes), *x);
                }
            }
        }
    };
}

tile_kernel!(
    avx2_6x16,
    "avx2,fma",
    6,
    2,
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps
);
tile_kernel!(
    avx512_12x32,
    "avx512f",
    12,
    2,
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps
);

fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// AVX2 + FMA, 6×16.
pub(super) const AVX2_6X16: Spec<f32> = Spec {
    name: "avx2 6×16",
    mr: 6,
    nr: 16,
    mc: 96,
    kc: 768,
    nc: 2048,
    run: avx2_6x16,
    supported: has_avx2_fma,
};

/// AVX-512, 12×32.
pub(super) const AVX512_12X32: Spec<f32> = Spec {
    name: "avx512 12×32",
    mr: 12,
    nr: 32,
    mc: 96,
    kc: 768,
    nc: 2048,
    run: avx512_12x32,
    supported: has_avx512,
};
