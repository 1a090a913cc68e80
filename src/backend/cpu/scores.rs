//! The attention scores' fused softmax on the CPU: scale and mask applied in the input's
//! dtype as `mul_scalar` then `add` would round them, the softmax in the compute type.

use super::super::{KeyMask, Rows, lowest};
use super::softmax::{backward_row, forward_row};
use crate::cpu;
use crate::dtype::{DType, Element, Real};
use crate::error::{Error, Result};
use crate::storage::{Buffer, IntoBuffer};
use num_traits::Zero;

/// Rows of up to this many keys are staged on the stack.
pub(crate) const STACK_ROW: usize = 1024;

/// x·scale + (lowest if hidden, else 0), each step rounded to E as `mul_scalar` then `add`
/// round it.
#[inline(always)]
pub(super) fn masked_score<E: Element>(x: E, s: E::C, low: E::C, hidden: bool) -> E::C {
    let scaled = E::from_c(x.to_c() * s).to_c();
    let add = if hidden { low } else { E::C::zero() };
    E::from_c(scaled + add).to_c()
}

pub(super) fn attention_softmax(
    x: &Buffer,
    rows: Rows,
    mask: &KeyMask,
    scale: f64,
) -> Result<Buffer> {
    Ok(match x {
        Buffer::F16(v) => forward(v, &rows, mask, scale)?.into_buffer(),
        // bf16 scores give bf16 probabilities, as PyTorch's CPU autocast.
        Buffer::BF16(v) => Buffer::F32(forward(v, &rows, mask, scale)?).cast(DType::BF16),
        Buffer::F32(v) => forward(v, &rows, mask, scale)?.into_buffer(),
        Buffer::F64(v) => forward(v, &rows, mask, scale)?.into_buffer(),
    })
}

pub(super) fn attention_softmax_grad(
    g: &Buffer,
    y: &Buffer,
    (t, scale): (usize, f64),
    dtype: DType,
) -> Result<Buffer> {
    Ok(match (dtype, g, y) {
        (DType::F16, Buffer::F32(g), Buffer::F32(y)) => {
            backward::<half::f16>(g, y, t, scale)?.into_buffer()
        }
        (DType::BF16, gb @ Buffer::BF16(_), yb @ Buffer::BF16(_)) => {
            backward::<half::bf16>(&gb.to_f32_vec(), &yb.to_f32_vec(), t, scale)?.into_buffer()
        }
        (DType::F32, Buffer::F32(g), Buffer::F32(y)) => {
            backward::<f32>(g, y, t, scale)?.into_buffer()
        }
        (DType::F64, Buffer::F64(g), Buffer::F64(y)) => {
            backward::<f64>(g, y, t, scale)?.into_buffer()
        }
        (d, gb, _) => {
            return Err(Error::invalid(
                "attention_softmax_backward",
                format!("a {:?} gradient for {d:?} scores", gb.dtype()),
            ));
        }
    })
}

fn forward<E: Element>(x: &[E], rows: &Rows, mask: &KeyMask, scale: f64) -> Result<Vec<E::C>>
where
    E::C: Element<C = E::C>,
{
    let t = rows.t;
    let mut out = cpu::zeroed("attention_softmax", x.len())?;
    let (s, low) = (E::C::c(scale), E::from_c(E::C::c(lowest(E::DTYPE))).to_c());
    cpu::rows_mut(&mut out, t, |r, row| {
        let (b, i) = rows.row(r, mask);
        let x = &x[r * t..(r + 1) * t];
        let z = |j: usize| masked_score(x[j], s, low, mask.hides(b, i, j));
        if t <= STACK_ROW {
            let mut zs = [E::C::default(); STACK_ROW];
            for (j, v) in zs[..t].iter_mut().enumerate() {
                *v = z(j);
            }
            forward_row(&zs[..t], row, false);
        } else {
            let zs: Vec<E::C> = (0..t).map(z).collect();
            forward_row(&zs, row, false);
        }
    });
    Ok(out)
}

fn backward<E: Element>(g: &[E::C], y: &[E::C], t: usize, scale: f64) -> Result<Vec<E>>
where
    E::C: Element<C = E::C>,
{
    let mut out = cpu::zeroed("attention_softmax_backward", g.len())?;
    let s = E::C::c(scale);
    cpu::rows_mut(&mut out, t, |r, row| {
        let span = r * t..(r + 1) * t;
        let mut dz = vec![E::C::default(); t];
        backward_row(&g[span.clone()], &y[span], &mut dz, false);
        for (o, d) in row.iter_mut().zip(dz) {
            *o = E::from_c(E::from_c(d).to_c() * s);
        }
    });
    Ok(out)
}
