//! Half-precision products (f16, bf16): operands widened to f32 (exact), multiplied by the
//! f32 kernel with f32 accumulation, each element of C rounded once, as PyTorch's CPU kernels
//! accumulate (bf16 on a CPU with AVX512_BF16: the same chain by `vdpbf16ps`, `pairs.rs`).
//! Widening costs O(mk + kn) against the product's O(mkn); it runs on every thread into
//! reused scratch, so it faults in no fresh pages for products of common sizes.

use super::{Gemm, Layout};
use crate::dtype::Element;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Operands up to this many elements reuse the thread's scratch (16 MiB each); larger
/// ones (an LM head's weight) get a fresh buffer that is freed after the product.
const REUSED: usize = 1 << 22;
/// Elements per task when converting on several threads.
const CHUNK: usize = 1 << 15;

thread_local! {
    static SCRATCH: [RefCell<Vec<f32>>; 3] = const {
        [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())]
    };
}

/// Runs `f` on `len` f32s of scratch `which` (A, B, C): stale contents, every element is
/// written before it is read.
fn scratch<R>(which: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if len > REUSED {
        return f(&mut vec![0.0; len]);
    }
    SCRATCH.with(|s| match s[which].try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        // A product started by a task this thread runs while it waits inside another.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

fn widen<E: Element<C = f32>>(src: &[E], dst: &mut [f32]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| E::widen_slice(s, d));
}

/// Where the rounded result goes.
pub(super) enum Out<'a, E> {
    /// An initialised C, added to when the flag is set.
    Init(&'a mut [E], bool),
    /// An uninitialised C, overwritten.
    Uninit(&'a mut [MaybeUninit<E>]),
}

/// `c = a·b (+ c when accumulating)` in f32, rounded into C once: bf16 through the CPU's
/// pair kernel where it has one (`pairs.rs`), else through widened operands.
pub(super) fn product<E: Element<C = f32>>(
    (m, k, n): (usize, usize, usize),
    (a, la): (&[E], Layout),
    (b, lb): (&[E], Layout),
    c: Out<'_, E>,
) {
    scratch(2, m * n, |wc| {
        let beta = matches!(c, Out::Init(_, true));
        if let Out::Init(c, true) = &c {
            widen(&c[..m * n], wc);
        }
        let pairs = super::pairs::kernel()
            .filter(|_| m > super::thin::ROWS)
            .zip(super::pairs::as_bf16(a).zip(super::pairs::as_bf16(b)));
        match pairs {
            Some((kern, (a, b))) => {
                super::count(m, k, n);
                super::pairs::product(kern, (m, k, n), (a, la), (b, lb), beta, wc);
            }
            None => scratch(0, a.len(), |wa| {
                widen(a, wa);
                scratch(1, b.len(), |wb| {
                    widen(b, wb);
                    f32::gemm(m, k, n, wa, la, wb, lb, beta, wc);
                })
            }),
        }
        match c {
            Out::Init(c, _) => c[..m * n]
                .par_chunks_mut(CHUNK)
                .zip(wc.par_chunks(CHUNK))
                .for_each(|(d, s)| E::narrow_slice(s, d)),
            Out::Uninit(c) => c[..m * n]
                .par_chunks_mut(CHUNK)
                .zip(wc.par_chunks(CHUNK))
                .for_each(|(d, s)| {
                    for (o, &v) in d.iter_mut().zip(s) {
                        o.write(E::from_c(v));
                    }
                }),
        }
    })
}
