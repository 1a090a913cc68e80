//! `rewind compare`: the memory-saving techniques one at a time on the same model and data
//! (and all together), each measured by a real training run: peak saved-activation bytes,
//! optimizer state, parameters + gradients, step time, tokens/s, padding, and the held-out
//! loss after the run.

use super::config::{AmpChoice, FreezeChoice, OptimChoice, PaddingChoice, PlanChoice, TrainConfig};
use super::{RunSummary, Trainer, run};
use crate::bench::plot::{BarPanel, bar_panels};
use crate::mib;
use rewind::error::Result;

/// One configuration of the comparison.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Row label.
    pub name: &'static str,
    /// Its configuration.
    pub cfg: TrainConfig,
}

/// Micro-batch size under accumulation: the baseline's batch split into this many parts.
pub const ACCUMULATION: usize = 4;

/// Baseline (fixed padding, fp32 AdamW, everything stored and trainable) and one change each,
/// then all changes together. Accumulation keeps the effective batch: `batch/4` × 4.
pub fn variants(base: &TrainConfig) -> Vec<Variant> {
    let base = TrainConfig {
        padding: PaddingChoice::Fixed,
        ..base.clone()
    };
    let with = |name, f: &dyn Fn(&mut TrainConfig)| {
        let mut cfg = base.clone();
        f(&mut cfg);
        Variant { name, cfg }
    };
    let ckpt = |c: &mut TrainConfig| c.plan = PlanChoice::Every;
    let accum = |c: &mut TrainConfig| {
        c.batch_size = (base.batch_size / ACCUMULATION).max(1);
        c.accumulation = ACCUMULATION;
    };
    let freeze = |c: &mut TrainConfig| {
        c.freeze = FreezeChoice {
            embeddings: true,
            lower_blocks: base.layers / 2,
        }
    };
    let amp = |c: &mut TrainConfig| c.amp = AmpChoice::Fp16;
    let bits = |c: &mut TrainConfig| c.optimizer = OptimChoice::AdamW8bit;
    vec![
        with("baseline", &|_| {}),
        with("+ checkpointing", &ckpt),
        with("+ accumulation", &accum),
        with("+ freezing", &freeze),
        with("+ AMP fp16", &amp),
        with("+ AMP bf16", &|c| c.amp = AmpChoice::Bf16),
        with("+ 8-bit AdamW", &bits),
        with("+ dynamic padding", &|c| c.padding = PaddingChoice::Dynamic),
        with("+ grouped padding", &|c| c.padding = PaddingChoice::Grouped),
        with("all together", &|c| {
            ckpt(c);
            accum(c);
            freeze(c);
            amp(c);
            bits(c);
            c.padding = PaddingChoice::Grouped;
        }),
    ]
}

/// One measured row.
#[derive(Debug, Clone)]
pub struct CompareRow {
    /// Variant name.
    pub name: &'static str,
    /// What its run measured.
    pub summary: RunSummary,
}

/// Trains every variant of `base` for `steps` steps, calling `on_row` as each finishes.
pub fn compare(
    base: &TrainConfig,
    steps: u64,
    on_row: &mut dyn FnMut(&CompareRow),
) -> Result<Vec<CompareRow>> {
    variants(base)
        .into_iter()
        .map(|v| {
            let mut t = Trainer::new(v.cfg)?;
            let row = CompareRow {
                name: v.name,
                summary: run(&mut t, steps, &mut |_, _| Ok(()))?,
            };
            on_row(&row);
            Ok(row)
        })
        .collect()
}

/// The comparison as a Markdown table.
pub fn table(rows: &[CompareRow]) -> String {
    let base = rows
        .first()
        .map(|r| r.summary.eval_loss)
        .unwrap_or(f64::NAN);
    let mut s = String::from(
        "| configuration | peak saved activations | optimizer state | params + grads | step time | tokens/s | padded | eval loss (Δ vs baseline) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let m = &r.summary;
        s.push_str(&format!(
            "| {} | {:.2} MiB | {:.2} MiB | {:.2} MiB | {:.0} ms | {:.0} | {:.1}% | {:.3} ({:+.1}%) |\n",
            r.name,
            mib(m.peak_saved_bytes),
            mib(m.optimizer_state_bytes),
            mib(m.param_bytes + m.grad_bytes),
            m.median_step_s * 1e3,
            m.tokens_per_s,
            100.0 * m.padded_fraction,
            m.eval_loss,
            100.0 * (m.eval_loss / base - 1.0)
        ));
    }
    s
}

/// The comparison as CSV (bytes and seconds unrounded).
pub fn csv(rows: &[CompareRow]) -> String {
    let mut s = String::from(
        "configuration,peak_saved_bytes,optimizer_state_bytes,param_bytes,grad_bytes,median_step_s,tokens_per_s,padded_fraction,train_loss,eval_loss,skipped_steps\n",
    );
    for r in rows {
        let m = &r.summary;
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            r.name,
            m.peak_saved_bytes,
            m.optimizer_state_bytes,
            m.param_bytes,
            m.grad_bytes,
            m.median_step_s,
            m.tokens_per_s,
            m.padded_fraction,
            m.train_loss,
            m.eval_loss,
            m.skipped_steps
        ));
    }
    s
}

/// An SVG with one bar panel per measure; the eval loss on a zoomed axis with the baseline
/// marked.
pub fn chart(rows: &[CompareRow]) -> Result<String> {
    let panel = |title: &str, zoom: bool, f: &dyn Fn(&RunSummary) -> f64| BarPanel {
        title: title.to_string(),
        bars: rows
            .iter()
            .map(|r| (r.name.to_string(), f(&r.summary)))
            .collect(),
        zoom_to_baseline: zoom,
    };
    bar_panels(
        "rewind compare: memory-saving techniques on one model",
        &[
            panel("peak saved activations (MiB)", false, &|m| {
                mib(m.peak_saved_bytes)
            }),
            panel("optimizer state + params + grads (MiB)", false, &|m| {
                mib(m.optimizer_state_bytes + m.param_bytes + m.grad_bytes)
            }),
            panel("throughput (real tokens/s)", false, &|m| m.tokens_per_s),
            panel("held-out loss (nats/token)", true, &|m| m.eval_loss),
        ],
        2,
    )
}

/// A target from the issue, with the measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The measured ratio or fraction.
    pub measured: f64,
    /// The threshold it must reach.
    pub threshold: f64,
    /// Whether higher is better (else the measured value must stay ≤ threshold).
    pub at_least: bool,
    /// Steps a run needs before the target says anything (0: any run shows it).
    pub min_steps: u64,
}

impl Target {
    /// Whether the measured figure meets the threshold.
    pub fn met(&self) -> bool {
        if self.at_least {
            self.measured >= self.threshold
        } else {
            self.measured <= self.threshold
        }
    }

    /// Whether a run of `steps` steps is long enough to judge it.
    pub fn judged(&self, steps: u64) -> bool {
        steps >= self.min_steps
    }

    /// The verdict after `steps` steps: `met`, `NOT met`, or which run length it needs.
    pub fn verdict(&self, steps: u64) -> String {
        match (self.judged(steps), self.met()) {
            (false, _) => format!("not judged: needs --steps {}", self.min_steps),
            (true, true) => "met".into(),
            (true, false) => "NOT met".into(),
        }
    }
}

/// Stated band for the held-out loss: every configuration within this fraction of baseline.
pub const LOSS_BAND: f64 = 0.05;

/// Steps before the held-out losses are comparable: the techniques that change the
/// arithmetic (8-bit state, frozen blocks, AMP, grouped batches) start apart and converge.
pub const LOSS_STEPS: u64 = 400;

/// The targets, measured on `rows` (as produced by [`compare`]).
pub fn targets(rows: &[CompareRow]) -> Vec<Target> {
    let get = |name: &str| rows.iter().find(|r| r.name == name).map(|r| &r.summary);
    let mut t = Vec::new();
    let Some(base) = get("baseline") else {
        return t;
    };
    let mut ratio =
        |what: &str, other: Option<&RunSummary>, f: &dyn Fn(&RunSummary) -> f64, threshold| {
            if let Some(o) = other {
                t.push(Target {
                    what: what.to_string(),
                    measured: f(o) / f(base),
                    threshold,
                    at_least: true,
                    min_steps: 0,
                });
            }
        };
    ratio(
        "dynamic padding tokens/s ÷ fixed",
        get("+ dynamic padding"),
        &|m| m.tokens_per_s,
        1.35,
    );
    ratio(
        "grouped padding tokens/s ÷ fixed",
        get("+ grouped padding"),
        &|m| m.tokens_per_s,
        1.5,
    );
    if let Some(c) = get("+ checkpointing") {
        t.push(Target {
            what: "saved activations: baseline ÷ checkpointing".into(),
            measured: base.peak_saved_bytes as f64 / c.peak_saved_bytes.max(1) as f64,
            threshold: 3.0,
            at_least: true,
            min_steps: 0,
        });
    }
    if let Some(b) = get("+ 8-bit AdamW") {
        t.push(Target {
            what: "optimizer state cut by 8-bit AdamW".into(),
            measured: 1.0
                - b.optimizer_state_bytes as f64 / base.optimizer_state_bytes.max(1) as f64,
            threshold: 0.70,
            at_least: true,
            min_steps: 0,
        });
    }
    let deviation = |r: &CompareRow| {
        let d = (r.summary.eval_loss / base.eval_loss - 1.0).abs();
        if d.is_nan() { f64::INFINITY } else { d }
    };
    if let Some(worst) = rows
        .iter()
        .max_by(|a, b| deviation(a).total_cmp(&deviation(b)))
    {
        t.push(Target {
            what: format!("largest eval-loss deviation ({})", worst.name),
            measured: deviation(worst),
            threshold: LOSS_BAND,
            at_least: false,
            min_steps: LOSS_STEPS,
        });
    }
    t
}
