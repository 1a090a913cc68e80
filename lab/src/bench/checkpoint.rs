//! Recompute vs store: the residual-MLP stack at several depths under several plans, with step
//! time, exact peak saved bytes from the tape, predicted peak, peak heap and recomputation.

use super::timed_after;
use crate::alloc_counter;
use crate::mib;
use rewind::checkpoint::op_plan::{self, BudgetPlan};
use rewind::checkpoint::{
    BlockCosts, CheckpointMode, Plan, SavePolicy, Segmentation, plan, run_blocks_with_policies,
    run_blocks_with_policy,
};
use rewind::error::Result;
use rewind::nn::Parameters;
use rewind::nn::ResidualMlp;
use rewind::optim::{Optimizer, ParamGroup, Sgd};
use rewind::rng;
use rewind::tape;
use rewind::tensor::Tensor;
use std::fmt::Write as _;

/// Sizes of the swept model.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Depths L to sweep.
    pub depths: Vec<usize>,
    /// Width.
    pub d: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Batch rows.
    pub rows: usize,
    /// Timed steps per plan (median reported). One warm-up step per depth, before its first
    /// plan: it pays for the fresh memory the depth needs, which the plans after it reuse.
    pub reps: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            depths: vec![4, 8, 16, 32, 64],
            d: 256,
            hidden: 1024,
            rows: 2048,
            reps: 3,
        }
    }
}

/// One measured (depth, plan) point.
#[derive(Debug, Clone)]
pub struct SweepRow {
    /// Number of blocks.
    pub depth: usize,
    /// Plan label.
    pub plan: String,
    /// The segmentation the plan chose.
    pub segmentation: String,
    /// Median seconds per SGD step.
    pub step_secs: f64,
    /// Fastest and slowest of the timed steps (the spread, to tell noise from effect).
    pub step_range: (f64, f64),
    /// Bytes saved for backward when the forward ended (what PyTorch's saved-tensor hooks see).
    pub forward_saved: usize,
    /// Peak saved bytes over a step, from the tape (recomputation included).
    pub peak_saved: usize,
    /// The planner's prediction of that peak (block plans).
    pub predicted_peak: Option<usize>,
    /// Peak heap bytes over a step, when the counting allocator is installed.
    pub peak_heap: Option<usize>,
    /// Blocks recomputed per step.
    pub recompute: usize,
    /// The budget, for budget plans.
    pub budget: Option<usize>,
}

/// A point of the sweep: a block plan under one policy, or the op-level budget planner's.
enum Scheme {
    Blocks(Plan, SavePolicy),
    Ops(BudgetPlan),
}

/// The policy of every checkpointed segment, or one per block (every block a segment).
enum Policies {
    Shared(SavePolicy),
    PerBlock(Vec<SavePolicy>),
}

/// One SGD step; returns the bytes saved for backward when the forward ended.
fn step(
    m: &ResidualMlp,
    opt: &mut Sgd,
    x: &Tensor,
    seg: &Segmentation,
    policies: &Policies,
) -> Result<usize> {
    let mode = CheckpointMode::NonReentrant;
    let y = match policies {
        Policies::Shared(p) => run_blocks_with_policy(&m.modules(), x, seg, mode, "blocks", p)?,
        Policies::PerBlock(ps) => run_blocks_with_policies(&m.modules(), x, mode, "blocks", ps)?,
    };
    let after_forward = tape::saved_bytes();
    y.mean()?.backward()?;
    opt.step()?;
    opt.zero_grad();
    Ok(after_forward)
}

/// Runs the sweep, calling `progress` after each point.
pub fn sweep(cfg: &SweepConfig, mut progress: impl FnMut(&SweepRow)) -> Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for &depth in &cfg.depths {
        rng::manual_seed(0);
        let m = ResidualMlp::new(depth, cfg.d, cfg.hidden)?;
        let x = Tensor::randn(&[cfg.rows, cfg.d])?;
        let mut opt = Sgd::new(vec![ParamGroup::new(m.parameters(), 1e-4, 0.0)], 0.0, false)?;
        let costs = BlockCosts::measure(&m.modules(), &x)?;
        let store = Segmentation::store_all(depth).predicted_peak(&costs);
        let least = costs.least_peak();
        // A budget below what any segmentation needs is raised to that least (marked `*`).
        let budget = |label: &str, b: usize| {
            if b >= least {
                (label.to_string(), Plan::Budget(b))
            } else {
                (format!("{label}*"), Plan::Budget(least))
            }
        };
        let profile = op_plan::profile(&m.modules(), &x, 1)?;
        let all = SavePolicy::RecomputeAll;
        let mut plans: Vec<(String, Scheme)> = vec![
            ("store".into(), Scheme::Blocks(Plan::None, all.clone())),
            (
                "every".into(),
                Scheme::Blocks(Plan::EveryBlock, all.clone()),
            ),
            ("sqrt".into(), Scheme::Blocks(Plan::Sqrt, all.clone())),
            (
                "every+dots".into(),
                Scheme::Blocks(Plan::EveryBlock, SavePolicy::SaveMatmuls),
            ),
        ];
        for k in [2, 4] {
            let (l, p) = budget(&format!("budget/{k}"), store / k);
            plans.push((l, Scheme::Blocks(p, all.clone())));
        }
        for k in [2, 4] {
            let plan = op_plan::plan_budget(&profile, &costs, store / k)?;
            plans.push((format!("ops/{k}"), Scheme::Ops(plan)));
        }
        for (i, (label, scheme)) in plans.into_iter().enumerate() {
            let (seg, policies, predicted, budget_bytes) = match &scheme {
                Scheme::Blocks(p, policy) => {
                    let seg = plan::segment(*p, depth, Some(&costs))?;
                    let predicted = match (policy, p) {
                        (SavePolicy::RecomputeAll, _) => Some(seg.predicted_peak(&costs)),
                        // Every block keeps its droppable matmul outputs: the op planner's model.
                        (SavePolicy::SaveMatmuls, Plan::EveryBlock) => {
                            let keep: Vec<Vec<usize>> = profile
                                .blocks
                                .iter()
                                .map(|b| {
                                    b.candidates()
                                        .into_iter()
                                        .filter(|&k| b.ops[k].dot)
                                        .collect()
                                })
                                .collect();
                            Some(profile.predicted_peak(&keep))
                        }
                        _ => None,
                    };
                    let budget = match p {
                        Plan::Budget(b) => Some(*b),
                        _ => None,
                    };
                    (seg, Policies::Shared(policy.clone()), predicted, budget)
                }
                Scheme::Ops(BudgetPlan::Blocks {
                    seg,
                    predicted_peak,
                    ..
                }) => (
                    seg.clone(),
                    Policies::Shared(all.clone()),
                    Some(*predicted_peak),
                    None,
                ),
                Scheme::Ops(BudgetPlan::Ops(o)) => (
                    plan::segment(Plan::EveryBlock, depth, None)?,
                    Policies::PerBlock(o.policies()),
                    Some(o.predicted_peak),
                    None,
                ),
            };
            let mut err = Ok(());
            let (mut peak_saved, mut peak_heap, mut forward_saved) = (0, None, 0);
            let timing = timed_after(usize::from(i == 0), cfg.reps, || {
                tape::reset_peak_saved_bytes();
                alloc_counter::reset_peak();
                match step(&m, &mut opt, &x, &seg, &policies) {
                    Ok(saved) => forward_saved = saved,
                    Err(e) => err = Err(e),
                }
                peak_saved = peak_saved.max(tape::peak_saved_bytes());
                peak_heap = alloc_counter::peak_bytes().max(peak_heap);
            });
            err?;
            let row = SweepRow {
                depth,
                plan: label,
                segmentation: match &scheme {
                    Scheme::Ops(BudgetPlan::Ops(o)) => {
                        let kept: usize = o.keep.iter().map(Vec::len).sum();
                        let droppable: usize =
                            profile.blocks.iter().map(|b| b.candidates().len()).sum();
                        format!("per block: {kept} of {droppable} droppable outputs kept")
                    }
                    _ => seg.describe(),
                },
                step_secs: timing.median,
                step_range: (timing.min, timing.max),
                forward_saved,
                peak_saved,
                predicted_peak: predicted,
                peak_heap,
                recompute: seg.recompute_count(),
                budget: budget_bytes,
            };
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The table: per row, time and memory with ratios to the same depth's store plan. A `*`
/// marks a budget below the least any segmentation needs, raised to that least.
pub fn table(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "   L  plan        step s      range s  ×store  fwd-saved MiB  ×store  peak-saved MiB  ×store  predicted MiB  heap MiB  recomputed  segments\n",
    );
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.depth == r.depth && b.plan == "store")
            .unwrap_or(r);
        let _ = writeln!(
            s,
            "{:>4}  {:<10} {:>7.3}  {:>11}  {:>6.2}  {:>13.1}  {:>6.3}  {:>14.1}  {:>6.3}  {:>13}  {:>8}  {:>10}  {}",
            r.depth,
            r.plan,
            r.step_secs,
            format!("{:.3}–{:.3}", r.step_range.0, r.step_range.1),
            r.step_secs / base.step_secs,
            mib(r.forward_saved),
            r.forward_saved as f64 / base.forward_saved.max(1) as f64,
            mib(r.peak_saved),
            r.peak_saved as f64 / base.peak_saved.max(1) as f64,
            r.predicted_peak
                .map_or("n/a".to_string(), |p| format!("{:.1}", mib(p))),
            r.peak_heap
                .map_or("n/a".to_string(), |h| format!("{:.0}", mib(h))),
            r.recompute,
            if r.segmentation.len() > 40 {
                format!("{}…", &r.segmentation[..40])
            } else {
                r.segmentation.clone()
            }
        );
    }
    s
}

/// CSV of every row.
pub fn csv(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "depth,plan,step_secs,step_min_secs,step_max_secs,forward_saved_bytes,peak_saved_bytes,predicted_peak_bytes,peak_heap_bytes,recomputed_blocks,budget_bytes,segments\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.6},{:.6},{:.6},{},{},{},{},{},{},\"{}\"",
            r.depth,
            r.plan,
            r.step_secs,
            r.step_range.0,
            r.step_range.1,
            r.forward_saved,
            r.peak_saved,
            r.predicted_peak.map_or(String::new(), |p| p.to_string()),
            r.peak_heap.map_or(String::new(), |h| h.to_string()),
            r.recompute,
            r.budget.map_or(String::new(), |b| b.to_string()),
            r.segmentation
        );
    }
    s
}

/// The rows of a CSV that [`csv`] wrote (or an earlier version without the step range), to
/// redraw its charts without measuring again.
pub fn rows_from_csv(text: &str) -> Result<Vec<SweepRow>> {
    let bad = |line: usize, what: &str| {
        rewind::Error::invalid("bench", format!("CSV line {}: {what}", line + 1))
    };
    let ranged = text
        .lines()
        .next()
        .is_some_and(|h| h.contains("step_min_secs"));
    let n = if ranged { 12 } else { 10 };
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let mut f: Vec<&str> = line.splitn(n, ',').collect();
            if f.len() != n {
                return Err(bad(i, &format!("expected {n} fields")));
            }
            let secs = |k: usize| -> Result<f64> {
                f[k].parse()
                    .map_err(|_| bad(i, &format!("field {} is not a number", k + 1)))
            };
            let median = secs(2)?;
            let range = if ranged {
                let r = (secs(3)?, secs(4)?);
                f.drain(3..5);
                r
            } else {
                (median, median)
            };
            let int = |k: usize| -> Result<usize> {
                f[k].parse()
                    .map_err(|_| bad(i, &format!("field {} is not a count", k + 1)))
            };
            let opt = |k: usize| -> Result<Option<usize>> {
                if f[k].is_empty() {
                    Ok(None)
                } else {
                    int(k).map(Some)
                }
            };
            Ok(SweepRow {
                depth: int(0)?,
                plan: f[1].to_string(),
                step_secs: median,
                step_range: range,
                forward_saved: int(3)?,
                peak_saved: int(4)?,
                predicted_peak: opt(5)?,
                peak_heap: opt(6)?,
                recompute: int(7)?,
                budget: opt(8)?,
                segmentation: f[9].trim_matches('"').to_string(),
            })
        })
        .collect()
}

/// Two SVG charts: peak saved memory vs step time at one depth (every point labelled with its
/// plan), and peak saved memory vs depth per plan with the √L prediction in the same unit.
pub fn plots(rows: &[SweepRow], at_depth: usize) -> Result<(String, String)> {
    use super::plot::{Mark, Point, Series, labelled_points, lines};
    let base = |p: &str| p.trim_end_matches('*').to_string();
    let plans: Vec<String> = rows
        .iter()
        .map(|r| base(&r.plan))
        .fold(Vec::new(), |mut v, p| {
            if !v.contains(&p) {
                v.push(p);
            }
            v
        });
    let at: Vec<Point> = rows
        .iter()
        .filter(|r| r.depth == at_depth)
        .map(|r| Point {
            label: r.plan.clone(),
            x: r.step_secs,
            y: mib(r.peak_saved),
        })
        .collect();
    let tradeoff = labelled_points(
        &format!("Recompute vs store: residual MLP, L = {at_depth}"),
        "median step time (s)",
        "peak saved activations (MiB)",
        &at,
    )?;
    let mut by_depth: Vec<Series> = plans
        .iter()
        .map(|p| Series {
            name: p.clone(),
            points: rows
                .iter()
                .filter(|r| &base(&r.plan) == p)
                .map(|r| (r.depth as f64, mib(r.peak_saved)))
                .collect(),
            mark: Mark::Measured,
        })
        .collect();
    // √L segments keep ≈ 2√L blocks' activations: 2√L × (the store plan's MiB per block).
    if let Some(store) = rows.iter().find(|r| r.plan == "store") {
        let per_block = mib(store.peak_saved) / store.depth as f64;
        by_depth.push(Series {
            name: format!("2√L × {per_block:.1} MiB (√L theory)"),
            points: rows
                .iter()
                .filter(|r| r.plan == "store")
                .map(|r| (r.depth as f64, 2.0 * (r.depth as f64).sqrt() * per_block))
                .collect(),
            mark: Mark::Theory,
        });
    }
    let by_depth = lines(
        "Peak saved activations vs depth",
        "depth L (blocks)",
        "peak saved activations (MiB)",
        &by_depth,
    )?;
    Ok((tradeoff, by_depth))
}
