//! The residual MLP's training step spread over ranks (`mpirun -np N rewind bench-dist`): rank
//! r takes the r-th N-th of the step's rows, its loss scaled by 1/N, its gradients summed in
//! buckets during the backward (as `rewind train` does); alone, one process takes every row.

use super::core::MlpConfig;
use super::{Timing, try_timed};
use crate::dist::Reducer;
use rewind::error::{Error, Result};
use rewind::nn::{Module, Parameters, ResidualMlp};
use rewind::optim::{Optimizer, ParamGroup, Sgd};
use rewind::{BackwardOptions, Tensor, rng};

/// What one rank measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistStep {
    /// Ranks in the job.
    pub ranks: usize,
    /// Rows of the whole step (all ranks).
    pub rows: usize,
    /// The step's wall time.
    pub step: Timing,
    /// Seconds a step spent in gradient all-reduces (the communication thread).
    pub all_reduce_s: f64,
    /// Seconds a step waited for them after its backward (not hidden).
    pub waited_s: f64,
}

/// Times `reps` SGD steps (stored activations) of the MLP `cfg` describes on `cfg.rows` rows
/// shared by `reducer`'s ranks (`None`: one process).
pub fn mlp_step(cfg: MlpConfig, reps: usize, mut reducer: Option<Reducer>) -> Result<DistStep> {
    let ranks = reducer.as_ref().map_or(1, Reducer::size);
    let rank = reducer.as_ref().map_or(0, Reducer::rank);
    if !cfg.rows.is_multiple_of(ranks) {
        return Err(Error::invalid(
            "bench-dist",
            format!("{} rows cannot be shared by {ranks} ranks", cfg.rows),
        ));
    }
    rng::manual_seed(0);
    let model = ResidualMlp::new(cfg.depth, cfg.d, cfg.hidden)?;
    let x = Tensor::randn(&[cfg.rows, cfg.d])?;
    let share = cfg.rows / ranks;
    let x = x.narrow(0, rank * share, share)?;
    let params = model.parameters();
    if let Some(d) = &reducer {
        d.broadcast(&params)?;
    }
    let mut opt = Sgd::new(vec![ParamGroup::new(params.clone(), 1e-3, 0.0)], 0.0, false)?;
    let step = try_timed(reps, || {
        let y = model.forward(&x)?;
        let loss = y.mul(&y)?.mean()?.mul_scalar(1.0 / ranks as f64)?;
        let mut opts = BackwardOptions::default();
        if let Some(d) = &mut reducer {
            opts.on_grad_ready = Some(d.hook(&params, Vec::new())?);
        }
        loss.backward_with(None, opts)?;
        if let Some(d) = &mut reducer {
            d.finish()?;
        }
        opt.step()?;
        opt.zero_grad();
        Ok(())
    })?;
    // The warm-up step is in the totals too.
    let runs = (reps.max(1) + 1) as f64;
    let c = reducer.as_ref().map(Reducer::times).unwrap_or_default();
    Ok(DistStep {
        ranks,
        rows: cfg.rows,
        step,
        all_reduce_s: c.all_reduce_s / runs,
        waited_s: c.waited_s / runs,
    })
}
