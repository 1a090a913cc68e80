//! Reductions on the CPU and the gradients that spread them back.

use crate::cpu;
use crate::cpu::reduce::{max_axis, sum_all, sum_axis};
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::{with_buffer, zip_buffers};

fn scaled<E: Element>(mut v: Vec<E>, scale: f64) -> Vec<E> {
    if scale != 1.0 {
        let s = <E::C as Real>::c(scale);
        v.iter_mut().for_each(|x| *x = E::from_c(x.to_c() * s));
    }
    v
}

pub(super) fn sum(
    x: &Buffer,
    split: Option<(usize, usize, usize)>,
    scale: f64,
    op: &'static str,
) -> Result<Buffer> {
    Ok(with_buffer!(x, v => match split {
        None => scaled(total(v), scale).into_buffer(),
        Some((o, a, i)) => scaled(sum_axis(op, v, o, a, i)?, scale).into_buffer(),
    }))
}

pub(super) fn max(
    x: &Buffer,
    (o, a, i): (usize, usize, usize),
    op: &'static str,
) -> Result<(Buffer, Vec<usize>)> {
    Ok(with_buffer!(x, v => {
        let (vals, idx) = max_axis(op, v, o, a, i)?;
        (vals.into_buffer(), idx)
    }))
}

pub(super) fn max_all(x: &Buffer) -> Result<(Buffer, Vec<usize>)> {
    Ok(with_buffer!(x, v => {
        let (vals, _) = max_axis("max", v, 1, v.len(), 1)?;
        let m = vals[0].to_c();
        // PyTorch's evenly_distribute_backward: every element equal to the result (every NaN
        // when the result is NaN) shares the gradient.
        let ties: Vec<usize> = (0..v.len())
            .filter(|&k| {
                let x = v[k].to_c();
                x == m || (m.is_nan() && x.is_nan())
            })
            .collect();
        (vals.into_buffer(), ties)
    }))
}

pub(super) fn spread(
    g: &Buffer,
    split: Option<(usize, usize, usize)>,
    n: usize,
    scale: f64,
) -> Result<Buffer> {
    Ok(with_buffer!(g, gv => {
        let gv = scaled(gv.clone(), scale);
        match split {
            _ if n == 0 => gv[..0].to_vec().into_buffer(),
            None => {
                let mut out = cpu::with_capacity("sum_backward", n)?;
                out.resize(n, gv[0]);
                out.into_buffer()
            }
            Some((o, a, i)) => {
                let mut out = cpu::with_capacity("sum_backward", n)?;
                for r in 0..o {
                    for _ in 0..a {
                        out.extend_from_slice(&gv[r * i..(r + 1) * i]);
                    }
                }
                out.into_buffer()
            }
        }
    }))
}

pub(super) fn scatter(
    g: &Buffer,
    at: &[usize],
    (o, a, i): (usize, usize, usize),
    op: &'static str,
) -> Result<Buffer> {
    let mut out = Buffer::zeros(op, g.dtype(), o * a * i)?;
    zip_buffers!(op, g, &mut out, s, d => {
        for (k, (&v, &p)) in s.iter().zip(at).enumerate() {
            let (r, c) = (k / i.max(1), k % i.max(1));
            d[(r * a + p) * i + c] = v;
        }
    })?;
    Ok(out)
}

pub(super) fn share(g: &Buffer, ties: &[usize], n: usize, op: &'static str) -> Result<Buffer> {
    let mut out = Buffer::zeros(op, g.dtype(), n)?;
    let count = ties.len() as f64;
    zip_buffers!(op, g, &mut out, s, d => {
        let v = d_elem(s[0], count);
        for &k in ties {
            d[k] = v;
        }
    })?;
    Ok(out)
}

fn total<E: Element>(v: &[E]) -> Vec<E> {
    vec![E::from_c(sum_all(v))]
}

fn d_elem<E: Element>(g: E, count: f64) -> E {
    E::from_c(g.to_c() / <E::C as Real>::c(count))
}
