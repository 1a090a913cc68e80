//! Which blocks to checkpoint: fixed plans (every block, every k, `checkpoint_sequential`, √n)
//! and a memory-budget planner that, from per-block costs measured on one probe forward,
//! chooses the segmentation with the least recomputation whose predicted peak fits.

use super::segment::{Body, CheckpointMode};
use super::selective::{SavePolicy, checkpoint_with_policy};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tape;
use crate::tensor::Tensor;
use std::ops::Range;
use std::rc::Rc;

/// A checkpointing plan for a chain of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Store everything (no checkpointing).
    None,
    /// Every block is its own checkpointed segment (HF's `gradient_checkpointing_enable`).
    EveryBlock,
    /// Checkpointed segments of `k` blocks each.
    EveryK(usize),
    /// Block i its own checkpointed segment when i is a multiple of `n`, the others stored:
    /// transformers' `activation_checkpointing_enable(every_n_layers=n)`.
    EveryNth(usize),
    /// PyTorch's `checkpoint_sequential(blocks, segments)`: equal segments, the last one stored.
    Sequential(usize),
    /// `Sequential(round(√n))`, Chen et al.'s O(√n) memory.
    Sqrt,
    /// The least recomputation whose predicted peak saved bytes fit in this many bytes.
    Budget(usize),
}

/// One run of consecutive blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Which blocks.
    pub blocks: Range<usize>,
    /// Recomputed in backward (true) or stored (false).
    pub checkpointed: bool,
}

/// A chain split into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmentation {
    /// The segments, in order, covering every block once.
    pub segments: Vec<Segment>,
}

impl Segmentation {
    /// All `n` blocks stored (no checkpointing).
    pub fn store_all(n: usize) -> Segmentation {
        Segmentation::from_runs(n, [(0..n, false)])
    }

    /// Blocks whose forward runs twice (once more in backward).
    pub fn recompute_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.checkpointed)
            .map(|s| s.blocks.len())
            .sum()
    }

    /// The segmentation in one line, e.g. `[0..4]c [4..8]c [8..16]s`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .segments
            .iter()
            .map(|s| {
                format!(
                    "[{}..{}]{}",
                    s.blocks.start,
                    s.blocks.end,
                    if s.checkpointed { "c" } else { "s" }
                )
            })
            .collect();
        parts.join(" ")
    }

    /// Predicted peak saved bytes under `costs`: the larger of what the forward leaves saved
    /// and, for each checkpointed segment, what is held before it plus its recomputation.
    pub fn predicted_peak(&self, costs: &BlockCosts) -> usize {
        let (mut held, mut peak) = (0usize, 0usize);
        for s in &self.segments {
            let acts: usize = costs.stored[s.blocks.clone()].iter().sum();
            if s.checkpointed {
                peak = peak.max(held + acts);
                held += costs.boundary[s.blocks.start];
            } else {
                held += acts;
            }
        }
        peak.max(held)
    }

    fn from_runs(n: usize, cuts: impl IntoIterator<Item = (Range<usize>, bool)>) -> Segmentation {
        let mut segments: Vec<Segment> = Vec::new();
        for (blocks, checkpointed) in cuts {
            if blocks.is_empty() {
                continue;
            }
            match segments.last_mut() {
                Some(last) if !last.checkpointed && !checkpointed => last.blocks.end = blocks.end,
                _ => segments.push(Segment {
                    blocks,
                    checkpointed,
                }),
            }
        }
        debug_assert_eq!(segments.last().map_or(0, |s| s.blocks.end), n);
        Segmentation { segments }
    }
}

/// Per-block memory costs measured on one forward that stores everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCosts {
    /// Bytes the block's ops save when it is stored (its input included, when it is an activation).
    pub stored: Vec<usize>,
    /// Bytes of the block's input when it is an activation (what a segment starting here keeps).
    pub boundary: Vec<usize>,
}

impl BlockCosts {
    /// Runs the blocks once on `x`, recording on a scratch tape, and reads the saved bytes.
    pub fn measure(blocks: &[Rc<dyn Module>], x: &Tensor) -> Result<BlockCosts> {
        tape::scratch(|| {
            let mut costs = BlockCosts {
                stored: Vec::new(),
                boundary: Vec::new(),
            };
            let mut h = x.clone();
            for b in blocks {
                costs.boundary.push(if h.storage().is_activation() {
                    h.nbytes()
                } else {
                    0
                });
                let before = tape::saved_bytes();
                h = b.forward(&h)?;
                costs.stored.push(tape::saved_bytes() - before);
            }
            Ok(costs)
        })
    }
}

impl BlockCosts {
    /// The smallest peak any segmentation reaches (the least feasible budget).
    pub fn least_peak(&self) -> usize {
        let (mut lo, mut hi) = (
            0usize,
            Segmentation::store_all(self.stored.len()).predicted_peak(self),
        );
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if solve(self, mid).is_some() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

/// Splits `n` blocks according to `plan`; `Plan::Budget` needs `costs`.
pub fn segment(plan: Plan, n: usize, costs: Option<&BlockCosts>) -> Result<Segmentation> {
    let chunks = |k: usize, last_stored: bool, count: usize| {
        (0..count).map(move |i| {
            let end = if i + 1 == count { n } else { (i + 1) * k };
            (i * k..end, !(last_stored && i + 1 == count))
        })
    };
    Ok(match plan {
        Plan::None => Segmentation::from_runs(n, [(0..n, false)]),
        Plan::EveryBlock => Segmentation::from_runs(n, (0..n).map(|i| (i..i + 1, true))),
        Plan::EveryNth(k) if k > 0 => {
            Segmentation::from_runs(n, (0..n).map(|i| (i..i + 1, i % k == 0)))
        }
        Plan::EveryK(0) | Plan::Sequential(0) | Plan::EveryNth(_) => {
            return Err(Error::invalid(
                "plan",
                "segments must hold at least one block",
            ));
        }
        Plan::EveryK(k) => Segmentation::from_runs(n, chunks(k, false, n.div_ceil(k))),
        Plan::Sequential(s) => {
            let s = s.min(n.max(1));
            let k = (n / s).max(1);
            Segmentation::from_runs(n, chunks(k, true, s))
        }
        Plan::Sqrt => {
            return segment(
                Plan::Sequential(((n as f64).sqrt().round() as usize).max(1)),
                n,
                costs,
            );
        }
        Plan::Budget(bytes) => {
            let costs = costs.ok_or_else(|| {
                Error::invalid("plan", "a budget plan needs measured block costs")
            })?;
            segments_within_budget(costs, bytes)?
        }
    })
}

/// Dynamic programme over block boundaries: `best[i][r]` is the least memory held after
/// covering blocks `0..i` with `r` recomputed blocks; a checkpointed segment `i..j` is allowed
/// only if what is held before it plus its recomputed activations fit in the budget.
fn segments_within_budget(costs: &BlockCosts, budget: usize) -> Result<Segmentation> {
    solve(costs, budget).ok_or_else(|| {
        Error::invalid(
            "plan",
            format!(
                "a budget of {budget} bytes is below the least any segmentation needs ({} bytes)",
                costs.least_peak()
            ),
        )
    })
}

fn solve(costs: &BlockCosts, budget: usize) -> Option<Segmentation> {
    let n = costs.stored.len();
    let prefix: Vec<usize> = std::iter::once(0)
        .chain(costs.stored.iter().scan(0, |s, &a| {
            *s += a;
            Some(*s)
        }))
        .collect();
    const NONE: usize = usize::MAX;
    let mut best = vec![vec![NONE; n + 1]; n + 1];
    let mut from = vec![vec![(0usize, 0usize, false); n + 1]; n + 1];
    best[0][0] = 0;
    for i in 0..n {
        for r in 0..=i {
            let held = best[i][r];
            if held == NONE {
                continue;
            }
            let stored = held + costs.stored[i];
            if stored <= budget && stored < best[i + 1][r] {
                best[i + 1][r] = stored;
                from[i + 1][r] = (i, r, false);
            }
            for j in i + 1..=n {
                let (nr, nh) = (r + j - i, held + costs.boundary[i]);
                if held + prefix[j] - prefix[i] <= budget && nh <= budget && nh < best[j][nr] {
                    best[j][nr] = nh;
                    from[j][nr] = (i, r, true);
                }
            }
        }
    }
    let r = (0..=n).find(|&r| best[n][r] != NONE)?;
    let (mut runs, mut at) = (Vec::new(), (n, r));
    while at.0 > 0 {
        let (i, pr, ck) = from[at.0][at.1];
        runs.push((i..at.0, ck));
        at = (i, pr);
    }
    runs.reverse();
    Some(Segmentation::from_runs(n, runs))
}

/// Revolve's optimum (Griewank & Walther 2000): the number of forward steps needed to reverse
/// `l` steps with `s` snapshots, t·l − β(s+1, t−1), with β(s, t) = C(s+t, s) and t the least
/// number of recomputations per step with β(s, t) ≥ l.
pub fn revolve_forward_steps(l: u64, s: u64) -> u64 {
    fn beta(s: u64, t: u64) -> u64 {
        // C(s+t, s), saturating.
        let mut c: u128 = 1;
        for i in 1..=t.min(s) as u128 {
            c = c * (s.max(t) as u128 + i) / i;
        }
        c.min(u64::MAX as u128) as u64
    }
    if l <= 1 {
        return 0;
    }
    let s = s.max(1);
    let t = (1..).find(|&t| beta(s, t) >= l).unwrap_or(l);
    t * l - beta(s + 1, t - 1)
}

/// Runs `blocks` on `x` following `seg`: checkpointed segments through [`checkpoint`](super::checkpoint) (named
/// `{prefix}.{first block}`), stored ones directly.
pub fn run_blocks(
    blocks: &[Rc<dyn Module>],
    x: &Tensor,
    seg: &Segmentation,
    mode: CheckpointMode,
    prefix: &str,
) -> Result<Tensor> {
    run_blocks_with_policy(blocks, x, seg, mode, prefix, &SavePolicy::RecomputeAll)
}

/// [`run_blocks`] with a selective policy for every checkpointed segment.
pub fn run_blocks_with_policy(
    blocks: &[Rc<dyn Module>],
    x: &Tensor,
    seg: &Segmentation,
    mode: CheckpointMode,
    prefix: &str,
    policy: &SavePolicy,
) -> Result<Tensor> {
    let mut h = x.clone();
    for s in &seg.segments {
        let part: Vec<Rc<dyn Module>> = blocks[s.blocks.clone()].to_vec();
        if s.checkpointed {
            let body: Body = Rc::new(move |xs: &[Tensor]| {
                part.iter().try_fold(xs[0].clone(), |h, b| b.forward(&h))
            });
            let name = format!("{prefix}.{}", s.blocks.start);
            h = checkpoint_with_policy(&name, mode, &[&h], body, policy)?;
        } else {
            h = part.iter().try_fold(h, |h, b| b.forward(&h))?;
        }
    }
    Ok(h)
}

/// Runs `blocks` on `x`, block i its own selective segment under `policies[i]` (named
/// `{prefix}.{i}`): what an [`super::op_plan::OpPlan`] prescribes.
pub fn run_blocks_with_policies(
    blocks: &[Rc<dyn Module>],
    x: &Tensor,
    mode: CheckpointMode,
    prefix: &str,
    policies: &[SavePolicy],
) -> Result<Tensor> {
    if policies.len() != blocks.len() {
        return Err(Error::invalid(
            "run_blocks_with_policies",
            format!("{} policies for {} blocks", policies.len(), blocks.len()),
        ));
    }
    let mut h = x.clone();
    for (i, (b, policy)) in blocks.iter().zip(policies).enumerate() {
        let b = b.clone();
        let body: Body = Rc::new(move |xs: &[Tensor]| b.forward(&xs[0]));
        h = checkpoint_with_policy(&format!("{prefix}.{i}"), mode, &[&h], body, policy)?;
    }
    Ok(h)
}

/// PyTorch's `checkpoint_sequential(functions, segments, input)`.
pub fn checkpoint_sequential(
    blocks: &[Rc<dyn Module>],
    segments: usize,
    x: &Tensor,
    mode: CheckpointMode,
) -> Result<Tensor> {
    let seg = segment(Plan::Sequential(segments), blocks.len(), None)?;
    run_blocks(blocks, x, &seg, mode, "segment")
}
