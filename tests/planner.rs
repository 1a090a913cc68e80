//! Plans: fixed segmentations match PyTorch's, the budget planner stays within its budget,
//! finds the least recomputation (checked by brute force), and is compared with Revolve.

use rewind::checkpoint::{
    BlockCosts, CheckpointMode, Plan, Segment, Segmentation, plan, revolve_forward_steps,
    run_blocks,
};
use rewind::nn::ResidualMlp;
use rewind::{Tensor, tape};

fn mlp(depth: usize) -> (ResidualMlp, Tensor) {
    rewind::rng::manual_seed(11);
    let m = ResidualMlp::new(depth, 16, 48).unwrap();
    let x = Tensor::randn(&[8, 16]).unwrap();
    (m, x)
}

/// Peak saved bytes over one forward + backward under `seg` (loss = mean, which saves nothing).
fn measured_peak(m: &ResidualMlp, x: &Tensor, seg: &Segmentation) -> usize {
    tape::clear();
    tape::reset_peak_saved_bytes();
    let y = run_blocks(&m.modules(), x, seg, CheckpointMode::NonReentrant, "b").unwrap();
    y.mean().unwrap().backward().unwrap();
    tape::peak_saved_bytes()
}

#[test]
fn checkpoint_sequential_leaves_its_last_segment_stored() {
    // PyTorch: 16 blocks in 4 segments → three checkpointed segments of 4, the last stored.
    let s = plan::segment(Plan::Sequential(4), 16, None).unwrap();
    assert_eq!(s.describe(), "[0..4]c [4..8]c [8..12]c [12..16]s");
    assert_eq!(s.recompute_count(), 12);
    assert_eq!(plan::segment(Plan::Sqrt, 16, None).unwrap(), s);
    assert_eq!(
        plan::segment(Plan::EveryK(3), 7, None).unwrap().describe(),
        "[0..3]c [3..6]c [6..7]c"
    );
    assert_eq!(
        plan::segment(Plan::EveryBlock, 2, None).unwrap().describe(),
        "[0..1]c [1..2]c"
    );
    assert_eq!(
        plan::segment(Plan::None, 3, None).unwrap().describe(),
        "[0..3]s"
    );
    assert!(plan::segment(Plan::EveryK(0), 3, None).is_err());
    assert!(
        plan::segment(Plan::Budget(100), 3, None).is_err(),
        "a budget plan needs costs"
    );
}

#[test]
fn predicted_peak_equals_measured_peak_for_every_plan() {
    let (m, x) = mlp(8);
    let costs = BlockCosts::measure(&m.modules(), &x).unwrap();
    for p in [
        Plan::None,
        Plan::EveryBlock,
        Plan::EveryK(3),
        Plan::Sequential(2),
        Plan::Sqrt,
    ] {
        let seg = plan::segment(p, 8, Some(&costs)).unwrap();
        assert_eq!(
            seg.predicted_peak(&costs),
            measured_peak(&m, &x, &seg),
            "{p:?}: {}",
            seg.describe()
        );
    }
}

#[test]
fn planner_stays_within_budget() {
    let (m, x) = mlp(12);
    let costs = BlockCosts::measure(&m.modules(), &x).unwrap();
    let full = Segmentation::store_all(12).predicted_peak(&costs);
    let least = costs.least_peak();
    assert!(
        least
            <= plan::segment(Plan::EveryBlock, 12, None)
                .unwrap()
                .predicted_peak(&costs)
    );
    let mut last_recompute = 0;
    for frac in [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25] {
        let budget = ((full as f64 * frac) as usize).max(least);
        let seg = plan::segment(Plan::Budget(budget), 12, Some(&costs)).unwrap();
        let (predicted, measured) = (seg.predicted_peak(&costs), measured_peak(&m, &x, &seg));
        assert!(
            predicted <= budget && measured <= budget,
            "budget {budget}: predicted {predicted}, measured {measured} ({})",
            seg.describe()
        );
        assert!(
            seg.recompute_count() >= last_recompute,
            "less memory never costs less recomputation"
        );
        last_recompute = seg.recompute_count();
    }
    assert_eq!(
        plan::segment(Plan::Budget(full), 12, Some(&costs))
            .unwrap()
            .recompute_count(),
        0
    );
    assert!(plan::segment(Plan::Budget(least), 12, Some(&costs)).is_ok());
    let err = plan::segment(Plan::Budget(least - 1), 12, Some(&costs)).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "below the least any segmentation needs ({least} bytes)"
        )),
        "{err}"
    );
}

/// Every labelling of blocks as stored / starting a checkpointed segment / continuing one.
fn all_segmentations(n: usize) -> Vec<Segmentation> {
    let mut out = Vec::new();
    for code in 0..3usize.pow(n as u32) {
        let mut segs: Vec<Segment> = Vec::new();
        let mut c = code;
        let mut ok = true;
        for i in 0..n {
            match c % 3 {
                0 => segs.push(Segment {
                    blocks: i..i + 1,
                    checkpointed: false,
                }),
                1 => segs.push(Segment {
                    blocks: i..i + 1,
                    checkpointed: true,
                }),
                _ => match segs.last_mut() {
                    Some(s) if s.checkpointed => s.blocks.end = i + 1,
                    _ => ok = false,
                },
            }
            c /= 3;
        }
        if ok {
            out.push(Segmentation { segments: segs });
        }
    }
    out
}

#[test]
fn planner_finds_the_least_recomputation_brute_force_confirms() {
    let (m, x) = mlp(7);
    let costs = BlockCosts::measure(&m.modules(), &x).unwrap();
    let all = all_segmentations(7);
    let full = Segmentation::store_all(7).predicted_peak(&costs);
    for frac in [0.9, 0.7, 0.5, 0.35] {
        let budget = (full as f64 * frac) as usize;
        let best = all
            .iter()
            .filter(|s| s.predicted_peak(&costs) <= budget)
            .map(Segmentation::recompute_count)
            .min();
        let planned = plan::segment(Plan::Budget(budget), 7, Some(&costs))
            .ok()
            .map(|s| s.recompute_count());
        assert_eq!(planned, best, "budget {budget}");
    }
}

#[test]
fn revolve_bound_matches_the_reference_and_is_never_beaten() {
    // Griewank & Walther: l = 1000 steps, s = 10 snapshots → t = 4, 3,636 forward steps.
    assert_eq!(revolve_forward_steps(1000, 10), 3636);
    // With a snapshot per step, every step is advanced once: l − 1 forward steps.
    assert_eq!(revolve_forward_steps(16, 16), 15);
    // A homogeneous chain: Revolve, holding as many block inputs as our plan's peak could,
    // needs at most the forwards our single-recompute plan runs (forward + recomputation).
    let (m, x) = mlp(16);
    let costs = BlockCosts::measure(&m.modules(), &x).unwrap();
    let snapshot = costs.boundary[1];
    for p in [Plan::EveryBlock, Plan::Sqrt, Plan::EveryK(2)] {
        let seg = plan::segment(p, 16, Some(&costs)).unwrap();
        let snapshots = (seg.predicted_peak(&costs) / snapshot) as u64;
        let ours = 16 + seg.recompute_count() as u64;
        assert!(
            revolve_forward_steps(16, snapshots) <= ours,
            "{p:?}: Revolve {} vs ours {ours}",
            revolve_forward_steps(16, snapshots)
        );
    }
}
