//! Fine-tuning the transformer on the synthetic corpus: a [`Trainer`] configured by a
//! [`TrainConfig`] (checkpoint plan and mode, AMP, optimizer, accumulation, freezing, LoRA,
//! padding), exact save/resume, a [`RunSummary`] per run, and [`compare`], which runs the
//! memory-saving techniques side by side on the same model and data.

pub mod compare;
pub mod config;
mod data;
mod dist;
mod save;
mod trainer;

pub use config::{
    AmpChoice, FreezeChoice, OptimChoice, PaddingChoice, PlanChoice, PolicyChoice, TrainConfig,
};
pub use data::Data;
pub use trainer::{DataPosition, StepStats, Trainer, suggest_fix};

use rewind::error::Result;

/// What a run measured, for the final JSON line and the comparison table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The configuration as (key, typed value).
    pub settings: Vec<(&'static str, serde_json::Value)>,
    /// Optimizer steps taken in this run (after a resume: since the resume).
    pub steps: u64,
    /// Steps taken in total.
    pub total_steps: u64,
    /// Mean training loss over the last (up to) 10 steps.
    pub train_loss: f64,
    /// Token-weighted loss on the held-out samples after the run.
    pub eval_loss: f64,
    /// Median wall time of a step (s).
    pub median_step_s: f64,
    /// Real (non-padding) tokens per second over the steps after the first.
    pub tokens_per_s: f64,
    /// Fraction of processed token slots that were padding.
    pub padded_fraction: f64,
    /// Most bytes the tape held saved in any step.
    pub peak_saved_bytes: usize,
    /// Optimizer state bytes at the end.
    pub optimizer_state_bytes: usize,
    /// Bytes of all parameters.
    pub param_bytes: usize,
    /// Most gradient bytes held at an optimizer step.
    pub grad_bytes: usize,
    /// Trainable scalar parameters.
    pub trainable_params: usize,
    /// Trainable tensors (holding `trainable_params` between them).
    pub trainable_tensors: usize,
    /// Steps the scaler skipped.
    pub skipped_steps: u64,
    /// Final loss scale (AMP only).
    pub loss_scale: Option<f32>,
}

/// Takes `steps` optimizer steps, calling `after_step` after each (with the trainer, so it
/// can save; its error ends the run), then evaluates.
pub fn run(
    trainer: &mut Trainer,
    steps: u64,
    after_step: &mut dyn FnMut(&Trainer, &StepStats) -> Result<()>,
) -> Result<RunSummary> {
    let mut stats = Vec::new();
    for _ in 0..steps {
        let s = trainer.step()?;
        after_step(trainer, &s)?;
        stats.push(s);
    }
    let mut times: Vec<f64> = stats.iter().map(|s| s.seconds).collect();
    times.sort_by(f64::total_cmp);
    let timed = if stats.len() > 1 {
        &stats[1..]
    } else {
        &stats[..]
    };
    let (tok, secs) = timed
        .iter()
        .fold((0, 0.0), |(t, s), x| (t + x.real_tokens, s + x.seconds));
    let (real, slots) = stats
        .iter()
        .fold((0, 0), |(r, s), x| (r + x.real_tokens, s + x.slots));
    let tail = &stats[stats.len().saturating_sub(10)..];
    Ok(RunSummary {
        settings: trainer.cfg.settings(),
        steps,
        total_steps: trainer.steps_done(),
        train_loss: tail.iter().map(|s| s.loss).sum::<f64>() / tail.len().max(1) as f64,
        eval_loss: trainer.eval_loss()?,
        median_step_s: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        tokens_per_s: if secs > 0.0 {
            tok as f64 / secs
        } else {
            f64::NAN
        },
        padded_fraction: if slots > 0 {
            1.0 - real as f64 / slots as f64
        } else {
            f64::NAN
        },
        peak_saved_bytes: stats.iter().map(|s| s.peak_saved_bytes).max().unwrap_or(0),
        optimizer_state_bytes: trainer.optimizer_state_bytes(),
        param_bytes: trainer.param_bytes(),
        grad_bytes: stats.iter().map(|s| s.grad_bytes).max().unwrap_or(0),
        trainable_params: trainer.trainable_params(),
        trainable_tensors: trainer.trainable_tensors(),
        skipped_steps: stats.iter().filter(|s| !s.updated).count() as u64,
        loss_scale: trainer.loss_scale(),
    })
}

impl RunSummary {
    /// One JSON object: the settings under `"config"`, then every figure (a figure that could
    /// not be measured, NaN, is `null`).
    pub fn to_json(&self) -> String {
        let config: serde_json::Map<String, serde_json::Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        serde_json::json!({
            "config": config,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "train_loss": self.train_loss,
            "eval_loss": self.eval_loss,
            "median_step_s": self.median_step_s,
            "tokens_per_s": self.tokens_per_s,
            "padded_fraction": self.padded_fraction,
            "peak_saved_bytes": self.peak_saved_bytes,
            "optimizer_state_bytes": self.optimizer_state_bytes,
            "param_bytes": self.param_bytes,
            "grad_bytes": self.grad_bytes,
            "trainable_params": self.trainable_params,
            "trainable_tensors": self.trainable_tensors,
            "skipped_steps": self.skipped_steps,
            "loss_scale": self.loss_scale,
        })
        .to_string()
    }
}
