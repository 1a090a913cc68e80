//! The trainer as one of several ranks: plain data parallelism (every rank holds the whole
//! optimizer) or ZeRO-1 (each rank its shard of it, the saves still whole).

use super::trainer::{Trainer, optimizer_over};
use crate::dist::Reducer;
use rewind::error::{Error, Result};
use rewind::optim::{MIN_8BIT_SIZE, OptimState};

impl Trainer {
    /// Trains as one of the ranks of `r`: every rank starts from rank 0's parameters, and
    /// each step's `accumulation` micro-batches are shared among the ranks (a multiple of
    /// their number). With `zero`, each rank keeps the optimizer state of its shard only
    /// (ZeRO stage 1); a state already loaded (a resume) is cut to the shard.
    pub fn set_dist(&mut self, mut r: Reducer, zero: bool) -> Result<()> {
        if !self.cfg.accumulation.is_multiple_of(r.size()) {
            return Err(Error::invalid(
                "train",
                format!(
                    "{} micro-batches per step cannot be shared by {} ranks",
                    self.cfg.accumulation,
                    r.size()
                ),
            ));
        }
        r.broadcast(&self.model.parameters())?;
        if zero {
            let whole = self.opt.state_dict();
            let pieces = r.enable_zero(&self.params)?;
            let blockwise: Vec<bool> = pieces
                .iter()
                .map(|(p, _)| self.params[p.param].numel() >= MIN_8BIT_SIZE)
                .collect();
            let tensors = pieces.into_iter().map(|(_, t)| t).collect();
            let mut opt = optimizer_over(&self.cfg, tensors, &blockwise)?;
            opt.load_state_dict(r.shard_state(&whole)?)?;
            self.opt = opt;
        }
        self.dist = Some(r);
        Ok(())
    }

    /// Time in gradient communication so far (`None` without data parallelism).
    pub fn comm_times(&self) -> Option<crate::dist::CommTimes> {
        self.dist.as_ref().map(Reducer::times)
    }

    /// This process's rank (0 without data parallelism).
    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, Reducer::rank)
    }

    /// Whether this rank keeps a ZeRO-1 shard of the optimizer.
    pub fn zero(&self) -> bool {
        self.dist.as_ref().is_some_and(|d| d.shards().is_some())
    }

    /// The whole optimizer state, one entry per trainable tensor: under ZeRO-1 gathered from
    /// every rank (all must call) and `None` except on rank 0.
    pub(super) fn whole_optimizer_state(&self) -> Result<Option<OptimState>> {
        match self.dist.as_ref().filter(|d| d.shards().is_some()) {
            Some(d) => d.gather_state(&self.opt.state_dict()),
            None => Ok(Some(self.opt.state_dict())),
        }
    }

    /// Every rank's optimizer state bytes, in rank order (all ranks must call).
    pub fn optimizer_state_bytes_per_rank(&self) -> Result<Vec<usize>> {
        self.each_rank(self.optimizer_state_bytes())
    }

    /// Every rank's `x`, in rank order (all ranks must call).
    pub fn each_rank(&self, x: usize) -> Result<Vec<usize>> {
        match &self.dist {
            Some(d) => Ok(d.each(x as f64)?.into_iter().map(|b| b as usize).collect()),
            None => Ok(vec![x]),
        }
    }
}
