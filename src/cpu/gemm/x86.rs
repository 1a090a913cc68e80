//! x86-64 micro-kernels. f32: AVX2 + FMA (6×16: twelve 8-lane accumulators) and AVX-512 (12×32:
//! twenty-four 16-lane accumulators), each element one FMA per k in k order, as every kernel
//! computes it ([`super::spec`]). bf16 pairs: AVX512_BF16 (12×32).

use super::pack::Pair;
use super::spec::Spec;
use std::arch::x86_64::*;

/// Defines a kernel body over `$rows` rows of `$vecs` vectors, given the vector type's load,
/// store, zero, broadcast and fma.
macro_rules! tile_kernel {
    ($name:ident, $feature:literal, $rows:literal, $vecs:literal, $lanes:literal,
     $load:ident, $store:ident, $zero:ident, $bcast:ident, $fma:ident) => {
        #[target_feature(enable = $feature)]
        #[allow(unsafe_op_in_unsafe_fn)]
        unsafe extern "C" fn $name(
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

/// AVX512_BF16, 12×32 over bf16 pairs (`super::pairs`): per pair of k, two 16-lane
/// `vdpbf16ps` per row into twenty-four f32 accumulators. Each lane adds the high half's
/// product, then the low half's (k in order; see `pairs.rs` for the bits).
///
/// # Safety
/// As [`super::spec::Run`]'s.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(unsafe_op_in_unsafe_fn)]
unsafe extern "C" fn avx512bf16_12x32(
    kc: usize,
    a: *const Pair,
    b: *const Pair,
    c: *mut f32,
    ldc: usize,
    zero: bool,
) {
    const ROWS: usize = 12;
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    if !zero {
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(c.add(i * ldc + v * 16));
            }
        }
    }
    let (mut a, mut b) = (a.cast::<i32>(), b.cast::<__m512i>());
    for _ in 0..kc {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(1)));
        for (i, row) in acc.iter_mut().enumerate() {
            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i)));
            row[0] = _mm512_dpbf16_ps(row[0], x, b0);
            row[1] = _mm512_dpbf16_ps(row[1], x, b1);
        }
        a = a.add(ROWS);
        b = b.add(2);
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            _mm512_storeu_ps(c.add(i * ldc + v * 16), *x);
        }
    }
}

fn has_avx512_bf16() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// AVX512_BF16, 12×32 over bf16 pairs; blocks as the f32 AVX-512 kernel's (a pair is 4 bytes).
pub(super) const AVX512BF16_12X32: Spec<Pair, f32> = Spec {
    name: "avx512-bf16 12×32",
    mr: 12,
    nr: 32,
    mc: 96,
    kc: 768,
    nc: 2048,
    run: avx512bf16_12x32,
    supported: has_avx512_bf16,
};
