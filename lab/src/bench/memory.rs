//! "Fitting training into memory": bytes of parameters, gradients, optimizer state and saved
//! activations, measured on one model under combinations of the memory-saving techniques.

use super::median_secs;
use crate::mib;
use rewind::amp::GradScaler;
use rewind::checkpoint::{CheckpointMode, Plan, Segmentation, plan, run_blocks};
use rewind::dtype::DType;
use rewind::error::Result;
use rewind::nn::ResidualMlp;
use rewind::nn::{Parameters, freeze};
use rewind::ops::autocast::autocast;
use rewind::optim::{AdamW, AdamW8bit, Optimizer, ParamGroup};
use rewind::{rng, tape};
use std::fmt::Write as _;

/// One configuration of the techniques.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Row label.
    pub name: &'static str,
    /// 8-bit AdamW instead of fp32 AdamW.
    pub adam8bit: bool,
    /// fp16 autocast with a GradScaler.
    pub amp: bool,
    /// Freeze the lower half of the blocks.
    pub freeze_half: bool,
    /// Checkpoint every block (non-reentrant).
    pub checkpoint: bool,
}

/// The configurations of the table.
pub const SETUPS: [Setup; 6] = [
    Setup {
        name: "fp32 AdamW",
        adam8bit: false,
        amp: false,
        freeze_half: false,
        checkpoint: false,
    },
    Setup {
        name: "8-bit AdamW",
        adam8bit: true,
        amp: false,
        freeze_half: false,
        checkpoint: false,
    },
    Setup {
        name: "fp32 AdamW + AMP",
        adam8bit: false,
        amp: true,
        freeze_half: false,
        checkpoint: false,
    },
    Setup {
        name: "8-bit AdamW + AMP",
        adam8bit: true,
        amp: true,
        freeze_half: false,
        checkpoint: false,
    },
    Setup {
        name: "8-bit + AMP + freeze half",
        adam8bit: true,
        amp: true,
        freeze_half: true,
        checkpoint: false,
    },
    Setup {
        name: "8-bit + AMP + freeze + ckpt",
        adam8bit: true,
        amp: true,
        freeze_half: true,
        checkpoint: true,
    },
];

/// Measured bytes and time of one configuration.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    /// The configuration.
    pub setup: Setup,
    /// Parameter bytes (fp32 master weights).
    pub params: usize,
    /// Gradient bytes after a step's backward.
    pub grads: usize,
    /// Optimizer state bytes.
    pub optimizer: usize,
    /// Peak saved activation bytes over a step.
    pub activations: usize,
    /// Median seconds per step.
    pub step_secs: f64,
}

/// Measures every setup on a residual MLP of `depth` blocks (d → 4d → d) and `rows` rows.
pub fn measure(depth: usize, d: usize, rows: usize, reps: usize) -> Result<Vec<MemoryRow>> {
    SETUPS
        .iter()
        .map(|s| measure_one(*s, depth, d, rows, reps))
        .collect()
}

fn measure_one(s: Setup, depth: usize, d: usize, rows: usize, reps: usize) -> Result<MemoryRow> {
    rng::manual_seed(0);
    let m = ResidualMlp::new(depth, d, 4 * d)?;
    let x = rewind::tensor::Tensor::randn(&[rows, d])?;
    let named = m.named_parameters();
    if s.freeze_half {
        for i in 0..depth / 2 {
            freeze(&named, &format!("blocks.{i}."))?;
        }
    }
    let trainable: Vec<_> = named
        .iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(_, p)| p.clone())
        .collect();
    let groups = vec![ParamGroup::new(trainable, 1e-4, 0.01)];
    let mut opt: Box<dyn Optimizer> = if s.adam8bit {
        Box::new(AdamW8bit::new(groups))
    } else {
        Box::new(AdamW::new(groups))
    };
    let mut scaler = GradScaler::new();
    let seg = if s.checkpoint {
        plan::segment(Plan::EveryBlock, depth, None)?
    } else {
        Segmentation::store_all(depth)
    };
    let (mut grads, mut peak) = (0, 0);
    let mut err = Ok(());
    let mut step = || -> Result<()> {
        tape::reset_peak_saved_bytes();
        let loss = {
            let _ac = autocast(s.amp.then_some(DType::F16));
            let y = run_blocks(
                &m.modules(),
                &x,
                &seg,
                CheckpointMode::NonReentrant,
                "blocks",
            )?;
            y.mul(&y)?.mean()?
        };
        if s.amp {
            scaler.scale(&loss)?.backward()?;
        } else {
            loss.backward()?;
        }
        peak = peak.max(tape::peak_saved_bytes());
        grads = opt
            .params()
            .iter()
            .filter_map(|p| p.grad())
            .map(|g| g.nbytes())
            .sum();
        if s.amp {
            scaler.step(opt.as_mut())?;
            scaler.update();
        } else {
            opt.step()?;
        }
        opt.zero_grad();
        Ok(())
    };
    let secs = median_secs(reps, || {
        if let Err(e) = step() {
            err = Err(e);
        }
    });
    err?;
    let optimizer = opt
        .state_dict()
        .buffers
        .iter()
        .flatten()
        .map(|(_, b)| match b {
            rewind::optim::StateBuffer::F32(v) => 4 * v.len(),
            rewind::optim::StateBuffer::U8(v) => v.len(),
        })
        .sum();
    Ok(MemoryRow {
        setup: s,
        params: named.iter().map(|(_, p)| p.nbytes()).sum(),
        grads,
        optimizer,
        activations: peak,
        step_secs: secs,
    })
}

/// The table in MiB, with the total.
pub fn table(rows: &[MemoryRow]) -> String {
    let mut s = String::from(
        "| setup | params MiB | grads MiB | optimizer MiB | saved activations MiB | total MiB | step s |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let total = r.params + r.grads + r.optimizer + r.activations;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} |",
            r.setup.name,
            mib(r.params),
            mib(r.grads),
            mib(r.optimizer),
            mib(r.activations),
            mib(total),
            r.step_secs
        );
    }
    s
}
