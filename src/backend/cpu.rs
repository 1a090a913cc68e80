//! The CPU implements the kernel interface over `crate::cpu`: elementwise maps on rayon's
//! threads, broadcasting, rewind's GEMM.

mod copy;
mod loss;
mod norm;
mod reduce;
pub(crate) mod softmax;

use super::{BackendStorage, BinaryOp, Copy2d, Product, Saves, Split, Targets, Unary};
use crate::cpu;
use crate::cpu::broadcast;
use crate::cpu::gemm::{Gemm, Layout};
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};
use num_traits::Zero;

impl BackendStorage for Buffer {
    fn to_dtype(&self, dtype: DType) -> Result<Buffer> {
        Ok(self.cast(dtype))
    }

    #[inline]
    fn unary<U: Unary>(&self, op: U) -> Result<Buffer> {
        Ok(
            with_buffer!(self, v => cpu::map(U::SPEC.name, v, #[inline(always)] move |a| op.f(a))?.into_buffer()),
        )
    }

    #[inline]
    fn unary_grad<U: Unary>(&self, saved: Option<&Buffer>, op: U) -> Result<Buffer> {
        match (saved, U::SAVES) {
            (None, _) | (_, Saves::Nothing) => {
                Ok(with_buffer!(self, gv => grad_const(gv, op)?.into_buffer()))
            }
            (Some(s), saves) => zip_buffers!(U::SPEC.name, self, s, gv, sv =>
                grad_saved(gv, sv, op, saves == Saves::Input)?.into_buffer()),
        }
    }

    fn binary(
        &self,
        rhs: &Buffer,
        kind: BinaryOp,
        (sa, sb, out): (&[usize], &[usize], &[usize]),
        op: &'static str,
    ) -> Result<Buffer> {
        zip_buffers!(op, self, rhs, x, y => match kind {
            BinaryOp::Add => broadcast::binary(op, x, sa, y, sb, out, |p, q| p + q)?.into_buffer(),
            BinaryOp::Sub => broadcast::binary(op, x, sa, y, sb, out, |p, q| p - q)?.into_buffer(),
            BinaryOp::Mul => broadcast::binary(op, x, sa, y, sb, out, |p, q| p * q)?.into_buffer(),
            BinaryOp::Div => broadcast::binary(op, x, sa, y, sb, out, |p, q| p / q)?.into_buffer(),
        })
    }

    fn sum_to(&self, from: &[usize], to: &[usize]) -> Result<Buffer> {
        // The result is never larger than `self`, which exists.
        Ok(with_buffer!(self, v => broadcast::sum_to(v, from, to).into_buffer()))
    }

    fn product(&self, rhs: &Buffer, p: Product, op: &'static str) -> Result<Buffer> {
        zip_buffers!(op, self, rhs, a, b => batched(a, b, p, op)?.into_buffer())
    }

    fn linear(
        &self,
        w: &Buffer,
        bias: Option<&Buffer>,
        (rows, din, dout): (usize, usize, usize),
    ) -> Result<Buffer> {
        if let Some(b) = bias
            && b.dtype() != self.dtype()
        {
            return Err(crate::error::Error::DTypeMismatch {
                op: "linear",
                lhs: self.dtype(),
                rhs: b.dtype(),
            });
        }
        zip_buffers!("linear", self, w, x, w => {
            linear(x, w, bias.and_then(|b| b.typed()), rows, din, dout)?.into_buffer()
        })
    }

    fn sum(&self, split: Option<Split>, scale: f64, op: &'static str) -> Result<Buffer> {
        reduce::sum(self, split, scale, op)
    }

    fn max(&self, split: Split, op: &'static str) -> Result<(Buffer, Vec<usize>)> {
        reduce::max(self, split, op)
    }

    fn max_all(&self) -> Result<(Buffer, Vec<usize>)> {
        reduce::max_all(self)
    }

    fn spread(&self, split: Option<Split>, n: usize, scale: f64) -> Result<Buffer> {
        reduce::spread(self, split, n, scale)
    }

    fn scatter_axis(&self, at: &[usize], split: Split, op: &'static str) -> Result<Buffer> {
        reduce::scatter(self, at, split, op)
    }

    fn share(&self, ties: &[usize], n: usize, op: &'static str) -> Result<Buffer> {
        reduce::share(self, ties, n, op)
    }

    fn softmax(&self, split: Split, log: bool) -> Result<Buffer> {
        softmax::softmax(self, split, log)
    }

    fn softmax_grad(&self, y: &Buffer, split: Split, log: bool) -> Result<Buffer> {
        softmax::softmax_grad(self, y, split, log)
    }

    fn layer_norm(
        &self,
        w: Option<&Buffer>,
        b: Option<&Buffer>,
        d: usize,
        eps: f64,
    ) -> Result<norm::Three> {
        norm::layer_norm(self, w, b, d, eps)
    }

    fn layer_norm_grad(
        &self,
        x: &Buffer,
        rstd: &Buffer,
        w: Option<&Buffer>,
        d: usize,
        param_grads: bool,
    ) -> Result<norm::Three> {
        norm::layer_norm_grad(self, x, rstd, w, d, param_grads)
    }

    fn rms_norm(&self, w: &Buffer, d: usize, eps: f64) -> Result<(Buffer, Buffer)> {
        norm::rms_norm(self, w, d, eps)
    }

    fn rms_norm_grad(
        &self,
        x: &Buffer,
        rstd: &Buffer,
        w: &Buffer,
        d: usize,
    ) -> Result<(Buffer, Buffer)> {
        norm::rms_norm_grad(self, x, rstd, w, d)
    }

    fn cross_entropy(&self, c: usize, t: Targets) -> Result<(Buffer, Vec<f64>)> {
        loss::cross_entropy(self, c, t)
    }

    fn cross_entropy_grad(&self, z: &Buffer, lse: &[f64], t: Targets) -> Result<Buffer> {
        loss::cross_entropy_grad(self, z, lse, t)
    }

    fn copy2d(&self, dst: &mut Buffer, c: Copy2d, add: bool) -> Result<()> {
        copy::copy2d(self, dst, c, add)
    }

    fn permute(&self, shape: &[usize], dims: &[usize]) -> Result<Buffer> {
        copy::permute(self, shape, dims)
    }

    fn index_select(&self, ids: &[i64], d: usize) -> Result<Buffer> {
        copy::index_select(self, ids, d)
    }

    fn index_add(&self, ids: &[i64], rows_d: (usize, usize), skip: Option<i64>) -> Result<Buffer> {
        copy::index_add(self, ids, rows_d, skip)
    }

    fn masked_fill(
        &self,
        mask: &Buffer,
        shapes: (&[usize], &[usize]),
        value: f64,
    ) -> Result<Buffer> {
        copy::masked_fill(self, mask, shapes, value)
    }

    fn dropout_mask(&self, p: f64) -> Result<Buffer> {
        copy::dropout_mask(self, p)
    }
}

/// g·f' where f' is constant.
fn grad_const<E: Element, U: Unary>(g: &[E], op: U) -> Result<Vec<E>> {
    let d = op.df(E::C::zero(), E::C::zero());
    cpu::map(
        U::SPEC.name,
        g,
        #[inline(always)]
        move |g| g * d,
    )
}

/// g·f'(saved), the saved value being the input (`is_input`) or the output.
fn grad_saved<E: Element, U: Unary>(g: &[E], s: &[E], op: U, is_input: bool) -> Result<Vec<E>> {
    if is_input {
        cpu::zip(
            U::SPEC.name,
            g,
            s,
            #[inline(always)]
            move |g, x| g * op.df(x, E::C::zero()),
        )
    } else {
        cpu::zip(
            U::SPEC.name,
            g,
            s,
            #[inline(always)]
            move |g, y| g * op.df(E::C::zero(), y),
        )
    }
}

/// C\[i\] = op(A\[i\])·op(B\[i\]) over the batch; a shared C (`c_shared`) accumulates all of them.
fn batched<E: Gemm>(a: &[E], b: &[E], p: Product, op: &'static str) -> Result<Vec<E>> {
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
fn linear<E: Gemm>(
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
