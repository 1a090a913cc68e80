//! The CPU implements the kernel interface over `crate::cpu`: elementwise maps on rayon's
//! threads, broadcasting, rewind's GEMM.

mod attention;
mod copy;
mod loss;
mod norm;
mod product;
mod reduce;
mod rope;
mod scores;
mod softmax;

use super::{
    BackendStorage, BinaryOp, Copy2d, Dims, KeyMask, Product, QueryBlocks, Rows, Saves, Split,
    Targets, Turn, Unary,
};
use crate::cpu;
use crate::cpu::broadcast;
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};
use num_traits::Zero;

impl BackendStorage for Buffer {
    fn device_name(&self) -> String {
        "cpu".into()
    }

    fn zeros(&self, dtype: DType, n: usize, op: &'static str) -> Result<Buffer> {
        Buffer::zeros(op, dtype, n)
    }

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
        zip_buffers!(op, self, rhs, a, b => product::batched(a, b, p, op)?.into_buffer())
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
            product::linear(x, w, bias.and_then(|b| b.typed()), rows, din, dout)?.into_buffer()
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

    fn cross_entropy(&self, c: usize, t: Targets, out: DType) -> Result<(Buffer, Vec<f64>)> {
        loss::cross_entropy(self, c, t, out)
    }

    fn cross_entropy_grad(&self, z: &Buffer, lse: &[f64], t: Targets) -> Result<Buffer> {
        loss::cross_entropy_grad(self, z, lse, t)
    }

    fn cross_entropy_grad_in_place(&self, z: &mut Buffer, lse: &[f64], t: Targets) -> Result<()> {
        loss::cross_entropy_grad_in_place(self, z, lse, t)
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

    fn rotate(&self, angles: &[(f32, f32)], turn: Turn) -> Result<Buffer> {
        rope::rotate(self, angles, turn)
    }

    fn attention_softmax(&self, rows: Rows, mask: &KeyMask, scale: f64) -> Result<Buffer> {
        scores::attention_softmax(self, rows, mask, scale)
    }

    fn attention_softmax_grad(
        &self,
        y: &Buffer,
        t_scale: (usize, f64),
        dtype: DType,
    ) -> Result<Buffer> {
        scores::attention_softmax_grad(self, y, t_scale, dtype)
    }

    fn attention_probs(
        &self,
        k: &Buffer,
        n: Dims,
        qb: &QueryBlocks,
        mask: &KeyMask,
        scale: f64,
    ) -> Result<Buffer> {
        attention::probs_of(self, k, n, qb, mask, scale)
    }

    fn attention_probs_grad(
        &self,
        y: &Buffer,
        qk: (Option<&Buffer>, Option<&Buffer>),
        n: Dims,
        qb: &QueryBlocks,
        scale: f64,
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        attention::probs_grads_of(self, y, qk, n, qb, scale)
    }

    fn attention_context(&self, v: &Buffer, n: Dims, qb: &QueryBlocks) -> Result<Buffer> {
        attention::context_of(self, v, n, qb)
    }

    fn attention_context_grad(
        &self,
        pv: (Option<&Buffer>, Option<&Buffer>),
        n: Dims,
        qb: &QueryBlocks,
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        attention::context_grads_of(self, pv, n, qb)
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
