//! One 8-bit AdamW quantization block: its slices, what every block of a step shares, and the
//! scalar reference step (the step table of [`CodeMap::quantize`]).

use crate::optim::adamw::{StepConsts, adam_update};
#[allow(unused_imports)] // for the doc link
use crate::optim::quant::CodeMap;
use crate::optim::quant::QuantMap;

/// Elements per quantization block.
pub const BLOCK: usize = 256;

/// One quantization block's slices: weights, gradients, the codes of m and v and their absmax.
pub(super) struct Block<'a> {
    pub w: &'a mut [f32],
    pub g: &'a [f32],
    pub qm: &'a mut [u8],
    pub qv: &'a mut [u8],
    pub am: &'a mut f32,
    pub av: &'a mut f32,
}

/// What every block of one step shares: the two maps and the step's constants.
pub(super) struct BlockUpdate<'a> {
    pub m: &'a QuantMap,
    pub v: &'a QuantMap,
    pub k: StepConsts,
}

/// One 256-element block: dequantize, update moments and parameters, requantize.
pub(super) fn block_step(b: Block<'_>, step: &BlockUpdate<'_>) {
    let Block {
        w,
        g,
        qm,
        qv,
        am,
        av,
    } = b;
    let (mapm, mapv, k) = (step.m.table(), step.v.table(), step.k);
    let n = w.len();
    let (mut sm, mut sv) = ([0f32; BLOCK], [0f32; BLOCK]);
    // Branch-free loops (selects, not ifs) so the arithmetic vectorises; the operations and
    // their order are those of the CUDA kernel.
    let (a, b) = (*am, *av);
    for j in 0..n {
        let gj = g[j];
        let m = k.b1 * (mapm.value(qm[j]) * a) + (1.0 - k.b1) * gj;
        let v = k.b2 * (mapv.value(qv[j]) * b) + (1.0 - k.b2) * gj * gj;
        let finite = gj.is_finite();
        sm[j] = if finite { m } else { 0.0 };
        sv[j] = if finite { v } else { 0.0 };
    }
    let new_am = sm[..n].iter().fold(0f32, |acc, x| acc.max(x.abs()));
    let new_av = sv[..n].iter().fold(0f32, |acc, &x| acc.max(x));
    for j in 0..n {
        let mut updated = w[j];
        adam_update(&mut updated, sm[j], sv[j], k);
        w[j] = if g[j].is_finite() { updated } else { w[j] };
    }
    let (im, iv) = (
        if new_am > 0.0 { 1.0 / new_am } else { 0.0 },
        if new_av > 0.0 { 1.0 / new_av } else { 0.0 },
    );
    for j in 0..n {
        qm[j] = mapm.quantize(sm[j] * im);
        qv[j] = mapv.quantize(sv[j] * iv);
    }
    *am = new_am;
    *av = new_av;
}
