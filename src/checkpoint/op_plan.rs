//! The op-level budget planner: every block a selective segment, and per block which op
//! outputs to keep, so that the recomputation time is least while the saved-activation peak
//! stays within a byte budget (what `torch.compile`'s `activation_memory_budget` does at
//! compile time, here in eager mode from one profiled forward).
//!
//! The model, exact for the tape's accounting: block j's body holds `total_j` saved bytes when
//! it ends; the planner may drop its candidate outputs (see [`OpCost::bytes`]). With `P_j` the
//! bytes blocks 0..=j keep, the peak is the largest of `before + P_{j−1} + total_j` (block j's
//! forward, and its recomputation in backward, which brings back exactly what it dropped) and
//! `before + P_L + after` (the end of the forward). The recomputation of block j reruns its ops
//! up to the first matmul after the last dropped output, skipping the matmuls it kept.

use super::plan::{BlockCosts, Plan, Segmentation, segment};
use super::selective::SavePolicy;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tape::{self, recompute};
use crate::tensor::Tensor;
use std::rc::Rc;

/// One op a block records, as profiled.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCost {
    /// The op.
    pub op: &'static str,
    /// Seconds it took in the profiled forward (what rerunning it costs).
    pub secs: f64,
    /// A matmul or linear: when kept, a rerun reuses its output instead of computing it.
    pub dot: bool,
    /// Bytes of its output when the planner may drop it (backward needs it, nothing outside
    /// the tape sees it, it is not the block's input or output); `None` otherwise.
    pub bytes: Option<usize>,
}

/// One block as profiled.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockProfile {
    /// Its recorded ops, in order.
    pub ops: Vec<OpCost>,
    /// Saved bytes its body holds when it ends, all outputs kept.
    pub total: usize,
}

impl BlockProfile {
    /// Positions of the ops whose outputs the planner may drop.
    pub fn candidates(&self) -> Vec<usize> {
        (0..self.ops.len())
            .filter(|&k| self.ops[k].bytes.is_some())
            .collect()
    }

    /// Bytes the block holds after its forward when it keeps `keep` (op positions).
    pub fn held(&self, keep: &[usize]) -> usize {
        let dropped: usize = self
            .candidates()
            .into_iter()
            .filter(|k| !keep.contains(k))
            .map(|k| self.ops[k].bytes.unwrap_or(0))
            .sum();
        self.total - dropped
    }

    /// Seconds its recomputation takes when it keeps `keep`: its ops up to the first matmul
    /// after the last dropped output, less the kept matmuls; 0 when nothing is dropped.
    pub fn rerun_secs(&self, keep: &[usize]) -> f64 {
        let Some(last) = self
            .candidates()
            .into_iter()
            .filter(|k| !keep.contains(k))
            .max()
        else {
            return 0.0;
        };
        let stop = (last + 1..self.ops.len())
            .find(|&k| self.ops[k].dot)
            .unwrap_or(self.ops.len());
        (0..stop)
            .filter(|k| !(self.ops[*k].dot && keep.contains(k)))
            .map(|k| self.ops[k].secs)
            .sum()
    }

    /// Seconds of its whole forward (what a plain checkpoint segment reruns).
    pub fn forward_secs(&self) -> f64 {
        self.ops.iter().map(|o| o.secs).sum()
    }
}

/// A model's blocks as profiled, with the saved bytes held before them and added after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The blocks, in order.
    pub blocks: Vec<BlockProfile>,
    /// Saved bytes held before the first block (embeddings, …), through the whole step.
    pub before: usize,
    /// Saved bytes added after the last block (the head, the loss).
    pub after: usize,
}

/// Which outputs each block keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct OpPlan {
    /// Per block, the positions of the ops whose outputs it keeps.
    pub keep: Vec<Vec<usize>>,
    /// The predicted peak of saved bytes.
    pub predicted_peak: usize,
    /// The predicted recomputation time of one step.
    pub rerun_secs: f64,
}

impl OpPlan {
    /// One policy per block, for [`super::run_blocks_with_policies`].
    pub fn policies(&self) -> Vec<SavePolicy> {
        self.keep
            .iter()
            .map(|k| SavePolicy::SaveIndices(k.clone()))
            .collect()
    }
}

impl Profile {
    /// The peak of saved bytes when block j keeps `keep[j]`.
    pub fn predicted_peak(&self, keep: &[Vec<usize>]) -> usize {
        let (mut held, mut peak) = (self.before, 0);
        for (b, k) in self.blocks.iter().zip(keep) {
            peak = peak.max(held + b.total);
            held += b.held(k);
        }
        peak.max(held + self.after)
    }

    /// The recomputation seconds when block j keeps `keep[j]`.
    pub fn rerun_secs(&self, keep: &[Vec<usize>]) -> f64 {
        self.blocks
            .iter()
            .zip(keep)
            .map(|(b, k)| b.rerun_secs(k))
            .sum()
    }

    /// The least recomputation whose peak fits `budget` bytes: exact (every block's subsets of
    /// candidates, pruned to those no other beats on both bytes and time, then a frontier over
    /// blocks of (bytes held, time)). `None` when even dropping everything does not fit.
    pub fn plan(&self, budget: usize) -> Result<Option<OpPlan>> {
        // (held so far, seconds so far, choices): sorted by held, seconds strictly falling.
        let mut frontier: Vec<(usize, f64, Vec<Vec<usize>>)> = vec![(self.before, 0.0, vec![])];
        for b in &self.blocks {
            let cands = b.candidates();
            if cands.len() > 20 {
                return Err(Error::invalid(
                    "plan_ops",
                    format!(
                        "a block with {} droppable outputs is too many to plan exactly (at most 20)",
                        cands.len()
                    ),
                ));
            }
            let mut options: Vec<(usize, f64, Vec<usize>)> = (0..1u32 << cands.len())
                .map(|mask| {
                    let keep: Vec<usize> = (0..cands.len())
                        .filter(|i| mask >> i & 1 == 1)
                        .map(|i| cands[i])
                        .collect();
                    (b.held(&keep), b.rerun_secs(&keep), keep)
                })
                .collect();
            options.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            options = pareto(options);
            let mut next = Vec::new();
            for (held, secs, choices) in &frontier {
                if held + b.total > budget {
                    continue;
                }
                for (h, s, keep) in &options {
                    let mut c = choices.clone();
                    c.push(keep.clone());
                    next.push((held + h, secs + s, c));
                }
            }
            next.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            frontier = pareto(next);
        }
        Ok(frontier
            .into_iter()
            .filter(|(held, _, _)| held + self.after <= budget)
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(_, secs, keep)| OpPlan {
                predicted_peak: self.predicted_peak(&keep),
                rerun_secs: secs,
                keep,
            }))
    }

    /// The block-level plan's recomputation seconds: a plain segment reruns its whole body.
    pub fn block_rerun_secs(&self, seg: &Segmentation) -> f64 {
        seg.segments
            .iter()
            .filter(|s| s.checkpointed)
            .flat_map(|s| s.blocks.clone())
            .map(|i| self.blocks[i].forward_secs())
            .sum()
    }
}

/// Keeps the entries of `sorted` (by bytes, then seconds) that no earlier one beats on time.
fn pareto<T>(sorted: Vec<(usize, f64, T)>) -> Vec<(usize, f64, T)> {
    let mut out: Vec<(usize, f64, T)> = Vec::new();
    for x in sorted {
        if out.last().is_none_or(|l| x.1 < l.1) {
            out.push(x);
        }
    }
    out
}

/// Profiles `blocks` on `x` (forward only, nothing kept afterwards): each block's recorded
/// ops with their time (the least of `reps` runs), which outputs could be dropped, and the
/// saved bytes its body holds.
pub fn profile(blocks: &[Rc<dyn Module>], x: &Tensor, reps: usize) -> Result<Profile> {
    let mut best: Option<Profile> = None;
    for _ in 0..reps.max(1) {
        let p = tape::scratch(|| -> Result<Profile> {
            let mut h = x.clone();
            let mut out = Vec::with_capacity(blocks.len());
            for b in blocks {
                let before = tape::saved_bytes();
                let capture = recompute::capture("profile", false, None);
                let y = b.forward(&h);
                let seg = capture.finish();
                let y = y?;
                let total = tape::saved_bytes() - before;
                out.push(BlockProfile {
                    ops: seg
                        .slots(&[&h, &y])
                        .into_iter()
                        .map(|s| OpCost {
                            op: s.op.name,
                            secs: s.secs,
                            dot: s.op.dot,
                            bytes: s.droppable,
                        })
                        .collect(),
                    total,
                });
                h = y;
            }
            Ok(Profile {
                blocks: out,
                before: 0,
                after: 0,
            })
        })?;
        best = Some(match best {
            None => p,
            Some(mut b) => {
                for (bb, pb) in b.blocks.iter_mut().zip(&p.blocks) {
                    for (o, q) in bb.ops.iter_mut().zip(&pb.ops) {
                        o.secs = o.secs.min(q.secs);
                    }
                }
                b
            }
        });
    }
    best.ok_or_else(|| Error::invalid("profile", "no run"))
}

/// What the budget planner chose: per-block selective segments, or a block-level plan when
/// that recomputes less at the same budget (it can keep fewer block inputs).
#[derive(Debug, Clone)]
pub enum BudgetPlan {
    /// Every block its own selective segment.
    Ops(OpPlan),
    /// Whole-block segments.
    Blocks {
        /// The segmentation.
        seg: Segmentation,
        /// Its predicted peak.
        predicted_peak: usize,
        /// Its predicted recomputation seconds.
        rerun_secs: f64,
    },
}

impl BudgetPlan {
    /// The predicted peak of saved bytes.
    pub fn predicted_peak(&self) -> usize {
        match self {
            BudgetPlan::Ops(p) => p.predicted_peak,
            BudgetPlan::Blocks { predicted_peak, .. } => *predicted_peak,
        }
    }

    /// The predicted recomputation seconds.
    pub fn rerun_secs(&self) -> f64 {
        match self {
            BudgetPlan::Ops(p) => p.rerun_secs,
            BudgetPlan::Blocks { rerun_secs, .. } => *rerun_secs,
        }
    }
}

/// The least recomputation within `budget`: the op-level plan, or the block-level plan when
/// it is cheaper or the op level cannot fit (so it never does worse than the block level).
pub fn plan_budget(profile: &Profile, costs: &BlockCosts, budget: usize) -> Result<BudgetPlan> {
    let n = profile.blocks.len();
    let blocks = segment(Plan::Budget(budget.max(costs.least_peak())), n, Some(costs))?;
    let block_plan = BudgetPlan::Blocks {
        predicted_peak: blocks.predicted_peak(costs),
        rerun_secs: profile.block_rerun_secs(&blocks),
        seg: blocks,
    };
    Ok(match profile.plan(budget)? {
        Some(ops) if ops.rerun_secs <= block_plan.rerun_secs() => BudgetPlan::Ops(ops),
        Some(ops) if block_plan.predicted_peak() > budget => BudgetPlan::Ops(ops),
        _ => block_plan,
    })
}
