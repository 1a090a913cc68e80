//! bf16 products as pairs (`pairs.rs`): the chain the widened f32 path computes, on every
//! layout, ragged and odd sizes, k = 0 and accumulation; and one lane of `vdpbf16ps` as Intel
//! defines it. The SIMD kernel runs here when the CPU has AVX512_BF16, and under Bochs's
//! emulator on any x86-64 (`emulated.rs`).
use super::pairs::{self, Pair, dot2};
use super::spec::Spec;
use super::*;

/// bf16 values with many distinct bits, signs and zeros, all normal.
fn values(n: usize, seed: usize) -> Vec<bf16> {
    (0..n)
        .map(|i| {
            let x = ((i * 37 + seed * 11) % 61) as f32 - 30.0;
            bf16::from_f32(x * 0.0371 * (1.0 + (i % 7) as f32 / 3.0))
        })
        .collect()
}

fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

#[test]
fn bf16_pair_products_are_the_widened_f32_chain_on_every_layout_and_odd_k() {
    use Layout::*;
    // Odd k (a padded last pair), k = 0, ragged tiles, and k = 1537 (769 pairs: four k blocks
    // of the portable kernel, so C carries the chain between blocks).
    let kernels: Vec<&Spec<Pair, f32>> = [&pairs::PORTABLE]
        .into_iter()
        .chain(pairs::simd())
        .collect();
    for (m, k, n) in [
        (1, 1, 1),
        (7, 3, 17),
        (13, 5, 33),
        (32, 16, 32),
        (97, 301, 33),
        (5, 0, 4),
        (13, 1537, 40),
    ] {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let (wa, wb) = (widen(&a), widen(&b));
        for la in [Normal, Transposed] {
            for lb in [Normal, Transposed] {
                for beta in [false, true] {
                    // The widened path's f32 chain, from 0 or from C = 0.75.
                    let mut want = vec![0.75f32; m * n];
                    f32::gemm(m, k, n, &wa, la, &wb, lb, beta, &mut want);
                    for kern in &kernels {
                        let mut got = vec![0.75f32; m * n];
                        pairs::product(kern, (m, k, n), (&a, la), (&b, lb), beta, &mut got);
                        for e in 0..m * n {
                            assert_eq!(
                                got[e].to_bits(),
                                want[e].to_bits(),
                                "{} {m}x{k}x{n} {la:?} {lb:?} beta {beta} at {e}: {} vs {}",
                                kern.name,
                                got[e],
                                want[e]
                            );
                        }
                    }
                }
            }
        }
    }
}

fn bits(hi: f32, lo: f32) -> Pair {
    let h = |x: f32| u32::from(bf16::from_f32(x).to_bits());
    Pair(h(hi) << 16 | h(lo))
}

#[test]
fn a_pair_lane_adds_the_high_product_first_and_reads_and_writes_subnormals_as_zero() {
    // 1 + 1·(−1) = 0, then + 2⁻¹⁵·2⁻¹⁵ = 2⁻³⁰. Low first would give (1 + 2⁻³⁰) − 1 = 0.
    let tiny = 2f32.powi(-15);
    assert_eq!(dot2(1.0, bits(1.0, tiny), bits(-1.0, tiny)), 2f32.powi(-30));
    // A subnormal input counts as zero: 2⁻¹³³ · 2¹⁰⁰ would be 2⁻³³.
    let sub = Pair(0x0001 << 16 | 0x3f80); // (2⁻¹³³, 1.0)
    assert_eq!(dot2(0.0, sub, bits(2f32.powi(100), 0.0)), 0.0);
    // A subnormal result is flushed to a zero of its sign: −(2⁻⁷⁰ · 2⁻⁷⁰) = −2⁻¹⁴⁰ becomes −0.0
    // (and the low halves' product, (−0.0)·0.0, leaves it so).
    let r = dot2(
        0.0,
        bits(-(2f32.powi(-70)), -0.0),
        bits(2f32.powi(-70), 0.0),
    );
    assert_eq!(r.to_bits(), (-0.0f32).to_bits());
    // A subnormal accumulator is read as zero.
    assert_eq!(dot2(f32::from_bits(1), bits(0.0, 0.0), bits(0.0, 0.0)), 0.0);
    // Normal values: two fused multiply-adds in turn, the high halves' first.
    let (x, y, z, w, c) = (1.5f32, -2.25f32, 0.3125f32, 7.0f32, 0.1f32);
    assert_eq!(
        dot2(c, bits(x, y), bits(z, w)),
        y.mul_add(w, x.mul_add(z, c))
    );
}

#[test]
fn bf16_products_take_the_pair_path_only_where_the_cpu_has_the_instruction() {
    // Whatever the path, bf16 products give the widened chain's bits rounded once (the pair
    // path's bits are the widened chain's for normal values, as tested above).
    let (m, k, n) = (16, 9, 24);
    let (a, b) = (values(m * k, 3), values(k * n, 4));
    let mut c = vec![bf16::ZERO; m * n];
    bf16::gemm(
        m,
        k,
        n,
        &a,
        Layout::Normal,
        &b,
        Layout::Normal,
        false,
        &mut c,
    );
    let mut want = vec![0.0f32; m * n];
    f32::gemm(
        m,
        k,
        n,
        &widen(&a),
        Layout::Normal,
        &widen(&b),
        Layout::Normal,
        false,
        &mut want,
    );
    for e in 0..m * n {
        assert_eq!(c[e], bf16::from_f32(want[e]), "at {e}");
    }
    #[cfg(target_arch = "x86_64")]
    let has = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    let has = false;
    assert_eq!(pairs::simd().is_some(), has);
    assert!(
        pairs::kernel().is_none() || has,
        "the pair path without the instruction"
    );
}
