//! The op-level budget planner: its optimum equals a brute force over every keep/drop choice
//! of small graphs, its predicted peak equals the tape's measured peak, and it never does
//! worse than the block-level planner at the same budget.

mod common;

use common::bits;
use rewind::checkpoint::op_plan::{self, BlockProfile, BudgetPlan, OpCost, Profile};
use rewind::checkpoint::{
    BlockCosts, CheckpointMode, Segmentation, run_blocks, run_blocks_with_policies,
};
use rewind::nn::{Parameters, ResidualMlp};
use rewind::{Tensor, rng, tape};

/// A small deterministic generator for synthetic profiles.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A random chain of `blocks` blocks with `ops` ops each, some droppable, some matmuls.
fn synthetic(rng: &mut Lcg, blocks: usize, ops: usize) -> Profile {
    let names = ["linear", "gelu", "matmul", "softmax", "tanh"];
    Profile {
        blocks: (0..blocks)
            .map(|_| {
                let ops: Vec<OpCost> = (0..ops)
                    .map(|_| {
                        let op = names[rng.below(names.len() as u64) as usize];
                        OpCost {
                            op,
                            secs: 1.0 + rng.below(40) as f64,
                            dot: matches!(op, "linear" | "matmul"),
                            bytes: (rng.below(4) != 0).then(|| 8 * (1 + rng.below(64) as usize)),
                        }
                    })
                    .collect();
                let dropped: usize = ops.iter().filter_map(|o| o.bytes).sum();
                BlockProfile {
                    ops,
                    total: dropped + 8 * rng.below(16) as usize,
                }
            })
            .collect(),
        before: 8 * rng.below(8) as usize,
        after: 8 * rng.below(8) as usize,
    }
}

/// Every keep/drop choice of every candidate: the least recomputation within `budget`.
fn brute_force(p: &Profile, budget: usize) -> Option<f64> {
    let cands: Vec<(usize, usize)> = p
        .blocks
        .iter()
        .enumerate()
        .flat_map(|(j, b)| b.candidates().into_iter().map(move |k| (j, k)))
        .collect();
    assert!(
        cands.len() <= 12,
        "brute force is for ≤ 12 droppable outputs"
    );
    let mut best: Option<f64> = None;
    for mask in 0..1u32 << cands.len() {
        let mut keep = vec![Vec::new(); p.blocks.len()];
        for (i, &(j, k)) in cands.iter().enumerate() {
            if mask >> i & 1 == 1 {
                keep[j].push(k);
            }
        }
        if p.predicted_peak(&keep) <= budget {
            let secs = p.rerun_secs(&keep);
            if best.is_none_or(|b| secs < b) {
                best = Some(secs);
            }
        }
    }
    best
}

#[test]
fn the_planner_finds_the_brute_force_optimum_on_small_graphs() {
    let mut rng = Lcg(17);
    let mut checked = 0;
    for case in 0..300 {
        let (blocks, ops) = [(1, 12), (2, 6), (3, 4), (4, 3), (6, 2)][case % 5];
        let p = synthetic(&mut rng, blocks, ops);
        if p.blocks.iter().map(|b| b.candidates().len()).sum::<usize>() > 12 {
            continue;
        }
        let all: usize =
            p.predicted_peak(&p.blocks.iter().map(|b| b.candidates()).collect::<Vec<_>>());
        for budget in [0, all / 2, 3 * all / 4, all, all + 8] {
            let got = p.plan(budget).unwrap();
            let want = brute_force(&p, budget);
            match (&got, want) {
                (None, None) => {}
                (Some(plan), Some(best)) => {
                    assert!(
                        (plan.rerun_secs - best).abs() < 1e-9,
                        "case {case}, budget {budget}: planner {} vs brute force {best}",
                        plan.rerun_secs
                    );
                    assert!(plan.predicted_peak <= budget);
                    assert_eq!(plan.predicted_peak, p.predicted_peak(&plan.keep));
                    assert!((plan.rerun_secs - p.rerun_secs(&plan.keep)).abs() < 1e-9);
                }
                _ => panic!("case {case}, budget {budget}: planner {got:?}, brute force {want:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} cases");
}

fn mlp() -> (ResidualMlp, Tensor) {
    rng::manual_seed(5);
    (
        ResidualMlp::new(6, 16, 64).unwrap(),
        Tensor::randn(&[32, 16]).unwrap(),
    )
}

/// Peak saved bytes of one step under `policies` (per-block selective segments), and its
/// gradient bits.
fn measured(m: &ResidualMlp, x: &Tensor, plan: &BudgetPlan) -> (usize, Vec<Vec<u32>>) {
    tape::clear();
    for p in m.parameters() {
        p.zero_grad();
    }
    tape::reset_peak_saved_bytes();
    let y = match plan {
        BudgetPlan::Ops(ops) => run_blocks_with_policies(
            &m.modules(),
            x,
            CheckpointMode::NonReentrant,
            "b",
            &ops.policies(),
        ),
        BudgetPlan::Blocks { seg, .. } => {
            run_blocks(&m.modules(), x, seg, CheckpointMode::NonReentrant, "b")
        }
    }
    .unwrap();
    y.mean().unwrap().backward().unwrap();
    let grads = m
        .parameters()
        .iter()
        .map(|p| bits(&p.grad().unwrap()))
        .collect();
    (tape::peak_saved_bytes(), grads)
}

#[test]
fn predicted_peak_equals_measured_and_the_op_plan_never_loses_to_the_block_plan() {
    let (m, x) = mlp();
    let profile = op_plan::profile(&m.modules(), &x, 1).unwrap();
    let costs = BlockCosts::measure(&m.modules(), &x).unwrap();
    let store = Segmentation::store_all(6).predicted_peak(&costs);
    let (_, stored_grads) = measured(
        &m,
        &x,
        &BudgetPlan::Blocks {
            seg: Segmentation::store_all(6),
            predicted_peak: store,
            rerun_secs: 0.0,
        },
    );
    for budget in [store, 3 * store / 4, store / 2, store / 3, store / 5] {
        let plan = op_plan::plan_budget(&profile, &costs, budget).unwrap();
        let (peak, grads) = measured(&m, &x, &plan);
        assert_eq!(peak, plan.predicted_peak(), "budget {budget}: {plan:?}");
        assert_eq!(grads, stored_grads, "budget {budget}");
        let blocks = rewind::checkpoint::plan::segment(
            rewind::checkpoint::Plan::Budget(budget.max(costs.least_peak())),
            6,
            Some(&costs),
        )
        .unwrap();
        assert!(plan.rerun_secs() <= profile.block_rerun_secs(&blocks) + 1e-12);
    }
    // At half the stored peak, keeping the first matmul's output per block (dropping only
    // GELU's) fits and recomputes no matmul: cheaper than any block plan there.
    let half = op_plan::plan_budget(&profile, &costs, store / 2).unwrap();
    let BudgetPlan::Ops(ops) = &half else {
        panic!("expected per-op plan at half the budget, got {half:?}")
    };
    assert!(ops.predicted_peak <= store / 2);
}
