//! Matrix products on the CPU: batched products over rewind's GEMM and F.linear with the bias
//! preloaded.

use super::super::Product;
use crate::cpu;
use crate::cpu::gemm::{Gemm, Layout};
use crate::error::Result;

/// C\[i\] = op(A\[i\])·op(B\[i\]) over the batch; a shared C (`c_shared`) accumulates all of them.
pub(super) fn batched<E: Gemm>(a: &[E], b: &[E], p: Product, op: &'static str) -> Result<Vec<E>> {
    let Product {
        batch,
        m,
        k,
        n,
        la,
        lb,
        a_shared,
        b_shared,
        c_shared,
    } = p;
    if m == 0 || n == 0 || k == 0 {
        // Empty, or sums over nothing: zeros, without looping over the batch.
        return cpu::zeroed(op, if c_shared { m * n } else { batch * m * n });
    }
    if !c_shared {
        let len = batch * m * n;
        let mut c: Vec<E> = cpu::with_capacity(op, len)?;
        let spare = &mut c.spare_capacity_mut()[..len];
        cpu::gemm::batch(batch, (m, k, n), a, la, a_shared, b, lb, b_shared, spare);
        // SAFETY: the capacity is at least `len` and `batch` wrote each of the `batch` m×n
        // products over it, all `len` elements.
        unsafe { c.set_len(len) };
        return Ok(c);
    }
    let mut c = cpu::zeroed(op, m * n)?;
    // One C summed over the batch, in batch order.
    for i in 0..batch {
        let ai = if a_shared {
            a
        } else {
            &a[i * m * k..(i + 1) * m * k]
        };
        let bi = if b_shared {
            b
        } else {
            &b[i * k * n..(i + 1) * k * n]
        };
        E::gemm(m, k, n, ai, la, bi, lb, i > 0, &mut c);
    }
    Ok(c)
}

/// y = x·Wᵀ + b as one GEMM with the bias preloaded row by row (no zeroing pass).
pub(super) fn linear<E: Gemm>(
    x: &[E],
    w: &[E],
    b: Option<&[E]>,
    rows: usize,
    din: usize,
    dout: usize,
) -> Result<Vec<E>> {
    let Some(b) = b else {
        return batched(
            x,
            w,
            Product::single((rows, din, dout), Layout::Normal, Layout::Transposed),
            "linear",
        );
    };
    let mut y = cpu::with_capacity("linear", rows * dout)?;
    for _ in 0..rows {
        y.extend_from_slice(b);
    }
    E::gemm(
        rows,
        din,
        dout,
        x,
        Layout::Normal,
        w,
        Layout::Transposed,
        true,
        &mut y,
    );
    Ok(y)
}
