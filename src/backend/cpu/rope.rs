//! Rotary embeddings on the CPU: each row's pairs turned by its position's angles.

use super::super::{RopeLayout, Turn};
use crate::cpu;
use crate::dtype::{Element, Real};
use crate::error::Result;
use crate::storage::{Buffer, IntoBuffer};
use crate::with_buffer;

pub(super) fn rotate(x: &Buffer, angles: &[(f32, f32)], turn: Turn) -> Result<Buffer> {
    Ok(with_buffer!(x, v => rotate_rows(v, turn.d, angles, turn)?.into_buffer()))
}

/// Turns every row (`d` wide; rows are `[B, H, T]` in order) by its position's angles, the
/// rows in parallel.
fn rotate_rows<E: Element>(
    x: &[E],
    d: usize,
    angles: &[(f32, f32)],
    Turn {
        heads,
        t,
        per_row,
        pairs,
        layout,
        ..
    }: Turn,
) -> Result<Vec<E>> {
    let half = pairs;
    // The angles in the compute type.
    let table: Vec<(E::C, E::C)> = angles
        .iter()
        .map(|&(c, s)| {
            (
                <E::C as Real>::c(f64::from(c)),
                <E::C as Real>::c(f64::from(s)),
            )
        })
        .collect();
    let mut out = cpu::with_capacity("rope", x.len())?;
    out.extend_from_slice(x);
    cpu::rows_mut(&mut out, d, |row, o| {
        // Rows are [B, H, T] in order: batch row / (H·T), token row % T.
        let (b, tok) = (row / (heads * t), row % t);
        let at = if per_row { tok } else { b * t + tok };
        let cs = &table[at * half..(at + 1) * half];
        let xr = &x[row * d..(row + 1) * d];
        cpu::simd(
            #[inline(always)]
            || {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (ia, ib) = match layout {
                        RopeLayout::Halves => (i, i + half),
                        RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (a, b) = (xr[ia].to_c(), xr[ib].to_c());
                    o[ia] = E::from_c(a * c - b * s);
                    o[ib] = E::from_c(b * c + a * s);
                }
            },
        )
    });
    Ok(out)
}
