//! Packing's row gather with AVX2: eight k values of up to eight rows are loaded as vectors and
//! transposed in registers (unpack, shuffle, lane swap), so each k's values leave as one store
//! instead of one scalar copy per element. Packing only moves elements: the bits of every
//! product are unchanged.

use std::arch::x86_64::*;

/// Gathers `R` rows of a row-major f32 matrix (row `r0` on, `k` apart, from column `k0`) into
/// `panel` as `[kc][R]`; false (nothing written) where the CPU has no AVX2 or `R` is not one
/// of 6, 8, 12, 16, 32 — the caller then copies element by element.
pub(super) fn gather_f32<const R: usize>(
    a: &[f32],
    (r0, k, k0): (usize, usize, usize),
    kc: usize,
    panel: &mut [f32],
) -> bool {
    if !matches!(R, 6 | 8 | 12 | 16 | 32) || kc == 0 || !is_x86_feature_detected!("avx2") {
        return false;
    }
    // The last element read, and the panel's extent: checked once, here.
    let end = (r0 + R - 1) * k + k0 + kc;
    assert!(
        end <= a.len() && kc * R <= panel.len(),
        "gemm packing: rows {r0}..{} of {k} past the operand",
        r0 + R
    );
    // SAFETY: AVX2 is present; rows r0..r0+R hold columns k0..k0+kc inside `a` (checked
    // above) and the panel holds kc·R elements.
    unsafe { gather_avx2::<R>(a.as_ptr().add(r0 * k + k0), k, kc, panel.as_mut_ptr()) };
    true
}

/// # Safety
/// AVX2 is present; `a` starts `R` rows of at least `kc` readable elements, `lda` apart;
/// `out` has room for `kc·R` elements.
#[target_feature(enable = "avx2")]
unsafe fn gather_avx2<const R: usize>(a: *const f32, lda: usize, kc: usize, out: *mut f32) {
    let full = kc / 8 * 8;
    for g in (0..R).step_by(8) {
        let rows = (R - g).min(8);
        for q in (0..full).step_by(8) {
            let mut v = [_mm256_setzero_ps(); 8];
            for (r, x) in v.iter_mut().enumerate().take(rows) {
                // SAFETY: row g + r < R, columns q..q + 8 ≤ kc.
                *x = unsafe { _mm256_loadu_ps(a.add((g + r) * lda + q)) };
            }
            // 8×8 transpose: t[j] holds column j of the block, rows 0..8 in its lanes.
            let t0 = _mm256_unpacklo_ps(v[0], v[1]);
            let t1 = _mm256_unpackhi_ps(v[0], v[1]);
            let t2 = _mm256_unpacklo_ps(v[2], v[3]);
            let t3 = _mm256_unpackhi_ps(v[2], v[3]);
            let t4 = _mm256_unpacklo_ps(v[4], v[5]);
            let t5 = _mm256_unpackhi_ps(v[4], v[5]);
            let t6 = _mm256_unpacklo_ps(v[6], v[7]);
            let t7 = _mm256_unpackhi_ps(v[6], v[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let t = [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ];
            for (j, col) in t.iter().enumerate() {
                // SAFETY: k value q + j < kc; rows g..g + rows < R of its place.
                let dst = unsafe { out.add((q + j) * R + g) };
                let low = _mm256_castps256_ps128(*col);
                // SAFETY: `rows` elements from `dst` are inside the panel (unaligned stores).
                unsafe {
                    match rows {
                        8 => _mm256_storeu_ps(dst, *col),
                        6 => {
                            _mm_storeu_ps(dst, low);
                            let high = _mm256_extractf128_ps::<1>(*col);
                            _mm_store_sd(dst.add(4).cast::<f64>(), _mm_castps_pd(high));
                        }
                        _ => _mm_storeu_ps(dst, low), // 4: R = 12's second group
                    }
                }
            }
        }
    }
    for q in full..kc {
        for r in 0..R {
            // SAFETY: q < kc, r < R.
            unsafe { *out.add(q * R + r) = *a.add(r * lda + q) };
        }
    }
}
