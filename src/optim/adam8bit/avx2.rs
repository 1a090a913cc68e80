//! The 8-bit AdamW block step with AVX2 and FMA: eight elements per instruction, the codes'
//! values and the new codes computed without table lookups (`quant::arith`). The Adam
//! arithmetic is the scalar reference's, in the same order, without fused multiply-adds, so
//! parameters, codes and absmax are bit-identical to it (tested).

use super::block::{BLOCK, Block, BlockUpdate};
use crate::optim::quant::arith::{Arith, avx2};
use std::arch::x86_64::*;

/// The arithmetic forms of both maps where this CPU runs the vector step.
pub(super) fn arith<'a>(step: &BlockUpdate<'a>) -> Option<(&'a Arith, &'a Arith)> {
    Some((step.m.arith_here()?, step.v.arith_here()?))
}

/// Runs `$body` for every 8-element offset `$j` below `$n`, two per iteration so that the
/// CPU overlaps their long dependency chains (a macro: closures here are not inlined).
macro_rules! pairs {
    ($n:expr, |$j:ident| $body:block) => {{
        let mut at = 0;
        while at + 16 <= $n {
            {
                let $j = at;
                $body
            }
            {
                let $j = at + 8;
                $body
            }
            at += 16;
        }
        if at < $n {
            let $j = at;
            $body
        }
    }};
}

/// One block (length a multiple of 8, at most [`BLOCK`]): the scalar `block_step`'s result.
/// Three short loops (moments, parameters, codes) rather than one long one: each keeps more
/// iterations in flight.
#[target_feature(enable = "avx2,fma")]
pub(super) fn block_step(b: Block<'_>, step: &BlockUpdate<'_>, (arm, arv): (&Arith, &Arith)) {
    let Block {
        w,
        g,
        qm,
        qv,
        am,
        av,
    } = b;
    let k = step.k;
    let n = w.len();
    assert!(n.is_multiple_of(8) && n <= BLOCK && g.len() == n && qm.len() == n && qv.len() == n);
    let (cm, cv) = (avx2::Consts::new(arm, true), avx2::Consts::new(arv, false));
    // Scratch for the block's new m and v: every element is written before it is read.
    let mut sm = std::mem::MaybeUninit::<[f32; BLOCK]>::uninit();
    let mut sv = std::mem::MaybeUninit::<[f32; BLOCK]>::uninit();
    let (sm, sv) = (sm.as_mut_ptr() as *mut f32, sv.as_mut_ptr() as *mut f32);
    let s = _mm256_set1_ps;
    let (a, b) = (s(*am), s(*av));
    let (b1, omb1, b2, omb2) = (s(k.b1), s(1.0 - k.b1), s(k.b2), s(1.0 - k.b2));
    let (decay, c1, c2, eps) = (s(k.decay), s(k.c1), s(k.c2), s(k.eps));
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let inf = s(f32::INFINITY);
    let (mut max_m, mut max_v) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    // SAFETY (every load and store below): j + 8 ≤ n ≤ BLOCK for each offset, and n is the
    // length of every slice (asserted).
    pairs!(n, |j| {
        let vm = avx2::dequantize8(&cm, &qm[j..j + 8]);
        let vv = avx2::dequantize8(&cv, &qv[j..j + 8]);
        let gj = unsafe { _mm256_loadu_ps(g.as_ptr().add(j)) };
        let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(gj, abs), inf);
        // m = β₁·(code·a) + (1−β₁)·g;  v = β₂·(code·b) + ((1−β₂)·g)·g
        let m = _mm256_add_ps(
            _mm256_mul_ps(b1, _mm256_mul_ps(vm, a)),
            _mm256_mul_ps(omb1, gj),
        );
        let v = _mm256_add_ps(
            _mm256_mul_ps(b2, _mm256_mul_ps(vv, b)),
            _mm256_mul_ps(_mm256_mul_ps(omb2, gj), gj),
        );
        let (m, v) = (_mm256_and_ps(m, finite), _mm256_and_ps(v, finite));
        unsafe {
            _mm256_storeu_ps(sm.add(j), m);
            _mm256_storeu_ps(sv.add(j), v);
        }
        // max(x, acc) keeps acc when x is NaN, as f32::max does.
        max_m = _mm256_max_ps(_mm256_and_ps(m, abs), max_m);
        max_v = _mm256_max_ps(v, max_v);
    });
    pairs!(n, |j| {
        // w·decay − (c1·m) / (√v·c2 + ε), kept only for finite gradients.
        let (m, v, wj, gj) = unsafe {
            (
                _mm256_loadu_ps(sm.add(j)),
                _mm256_loadu_ps(sv.add(j)),
                _mm256_loadu_ps(w.as_ptr().add(j)),
                _mm256_loadu_ps(g.as_ptr().add(j)),
            )
        };
        let step = _mm256_div_ps(
            _mm256_mul_ps(c1, m),
            _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), c2), eps),
        );
        let updated = _mm256_sub_ps(_mm256_mul_ps(wj, decay), step);
        let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(gj, abs), inf);
        let mut out = _mm256_blendv_ps(wj, updated, finite);
        // An opaque copy: LLVM would otherwise fuse load, blend and store into a masked store
        // (vmaskmovps), which AMD CPUs run in microcode several times slower.
        // SAFETY: an empty instruction sequence on a register.
        unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) out, options(pure, nomem, nostack)) };
        unsafe { _mm256_storeu_ps(w.as_mut_ptr().add(j), out) };
    });
    let hmax = |x: __m256| {
        let mut l = [0f32; 8];
        // SAFETY: `l` holds eight f32.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), x) };
        l.iter().fold(0f32, |acc, &v| acc.max(v))
    };
    let (new_am, new_av) = (hmax(max_m), hmax(max_v));
    let (im, iv) = (
        if new_am > 0.0 { 1.0 / new_am } else { 0.0 },
        if new_av > 0.0 { 1.0 / new_av } else { 0.0 },
    );
    let (im, iv) = (s(im), s(iv));
    // Codes, sixteen elements per iteration: two vectors of each map go through every step
    // together. A lone last vector is quantized twice (the same result) rather than branched.
    // SAFETY: j + 8 ≤ n ≤ BLOCK.
    let x_at = |j: usize| unsafe {
        (
            _mm256_mul_ps(_mm256_loadu_ps(sm.add(j)), im),
            _mm256_mul_ps(_mm256_loadu_ps(sv.add(j)), iv),
        )
    };
    for j in (0..n).step_by(16) {
        let second = if j + 16 <= n { j + 8 } else { j };
        let ((xm0, xv0), (xm1, xv1)) = (x_at(j), x_at(second));
        let [m0, m1] = avx2::quantize(&cm, [xm0, xm1]);
        let [v0, v1] = avx2::quantize(&cv, [xv0, xv1]);
        for (at, xm, xv, (codes_m, slow_m), (codes_v, slow_v)) in
            [(j, xm0, xv0, m0, v0), (second, xm1, xv1, m1, v1)]
        {
            let (qm, qv) = (&mut qm[at..at + 8], &mut qv[at..at + 8]);
            avx2::store_codes(codes_m, codes_v, qm, qv);
            if slow_m | slow_v != 0 {
                avx2::fix_lanes(step.m.table(), xm, slow_m, qm);
                avx2::fix_lanes(step.v.table(), xv, slow_v, qv);
            }
        }
    }
    *am = new_am;
    *av = new_av;
}
