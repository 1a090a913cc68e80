//! Checkpoint segments: PyTorch's reentrant failure reproduced, its three fixes, the silent
//! variant, bit-identical gradients for every plan and mode, exact memory, recompute checks.

use rewind::checkpoint::{
    BlockCosts, CheckpointMode, NO_INPUT_REQUIRES_GRAD_WARNING, Plan, Segmentation, checkpoint,
    diagnose, plan,
};
use rewind::models::{ReproConfig, ReproModel, ResidualMlp};
use rewind::nn::Parameters;
use rewind::{Error, Indices, Tensor, tape, warnings};
use std::rc::Rc;

const MODE_R: CheckpointMode = CheckpointMode::Reentrant;
const MODE_NR: CheckpointMode = CheckpointMode::NonReentrant;

fn data(cfg: &ReproConfig, rows: usize) -> (Indices, Indices) {
    let ids: Vec<i64> = (0..rows)
        .map(|i| ((i * 7 + 3) % cfg.vocab) as i64)
        .collect();
    let targets: Vec<i64> = (0..rows)
        .map(|i| ((i * 5 + 1) % cfg.vocab) as i64)
        .collect();
    (Indices::from_slice(&ids), Indices::from_slice(&targets))
}

fn model(cfg: ReproConfig) -> ReproModel {
    rewind::rng::manual_seed(42);
    ReproModel::new(cfg).unwrap()
}

fn every(n: usize) -> Segmentation {
    plan::segment(Plan::EveryBlock, n, None).unwrap()
}

/// Every block checkpointed except the last (the silent variant).
fn all_but_last(n: usize) -> Segmentation {
    let mut s = every(n);
    s.segments.last_mut().unwrap().checkpointed = false;
    s
}

/// Runs one forward + backward (same generator state each time) and returns every
/// parameter's gradient bits, `None` where it got no gradient.
fn grads(
    m: &ReproModel,
    seg: &Segmentation,
    mode: CheckpointMode,
    fix_a: bool,
) -> Vec<(String, Option<Vec<u32>>)> {
    let cfg_rows = 12;
    let (ids, targets) = data(&ReproConfig::default(), cfg_rows);
    for p in m.parameters() {
        p.zero_grad();
    }
    let hook = fix_a.then(|| m.embedding.enable_input_require_grads());
    rewind::rng::manual_seed(7);
    let loss = m.loss(&ids, &targets, seg, mode).unwrap();
    loss.backward().unwrap();
    if let Some(h) = hook {
        m.embedding.hooks.remove(h);
    }
    warnings::take();
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| {
            (
                n,
                p.grad()
                    .map(|g| g.to_vec_f32().iter().map(|v| v.to_bits()).collect()),
            )
        })
        .collect()
}

#[test]
fn reentrant_checkpoint_with_frozen_embedding_fails_like_pytorch() {
    let cfg = ReproConfig::default();
    let m = model(cfg);
    let (ids, targets) = data(&cfg, 12);
    warnings::take();
    let loss = m.loss(&ids, &targets, &every(cfg.blocks), MODE_R).unwrap();
    // One warning per checkpointed block, PyTorch's text.
    assert_eq!(
        warnings::take(),
        vec![NO_INPUT_REQUIRES_GRAD_WARNING.to_string(); cfg.blocks]
    );
    // The head is trainable, but its input was cut: the loss has no grad path.
    assert!(!loss.requires_grad());
    let err = loss.backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        "element 0 of tensors does not require grad and does not have a grad_fn"
    );
    // The explanation names the segments and the fix.
    let why = err.explain().expect("an explanation");
    assert!(why.contains("reentrant segment `blocks.0` has no input that requires grad; its 6 trainable parameters are captured"), "{why}");
    assert!(why.contains("enable_input_require_grads()") && why.contains("NonReentrant"));
    assert_eq!(format!("{err:#}"), format!("{err}\n\n{why}"));
}

#[test]
fn enable_input_require_grads_fixes_reentrant_checkpoint() {
    let cfg = ReproConfig::default();
    let m = model(cfg);
    let fixed = grads(&m, &every(cfg.blocks), MODE_R, true);
    assert!(
        fixed
            .iter()
            .filter(|(n, _)| n.starts_with("blocks."))
            .all(|(_, g)| g.is_some())
    );
    assert_eq!(
        fixed,
        grads(&m, &Segmentation::store_all(cfg.blocks), MODE_R, false),
        "fix a = no checkpointing, bit for bit"
    );
}

#[test]
fn non_reentrant_checkpoint_trains_params_inside() {
    let cfg = ReproConfig::default();
    let m = model(cfg);
    let (ids, targets) = data(&cfg, 12);
    warnings::take();
    let loss = m.loss(&ids, &targets, &every(cfg.blocks), MODE_NR).unwrap();
    assert!(
        warnings::take().is_empty(),
        "no warning: the parameters inside count"
    );
    assert!(loss.requires_grad());
    drop(loss);
    let nr = grads(&m, &every(cfg.blocks), MODE_NR, false);
    assert!(
        nr.iter()
            .filter(|(n, _)| n.starts_with("blocks."))
            .all(|(_, g)| g.is_some())
    );
    assert!(
        nr.iter()
            .filter(|(n, _)| !n.starts_with("blocks."))
            .all(|(_, g)| g.is_none()),
        "frozen stays frozen"
    );
    // Fixes a, b and c agree bit for bit (PyTorch: torch.equal on all three).
    let store = grads(&m, &Segmentation::store_all(cfg.blocks), MODE_NR, false);
    assert_eq!(nr, store);
    assert_eq!(grads(&m, &every(cfg.blocks), MODE_R, true), store);
}

#[test]
fn partially_checkpointed_model_silently_skips_grads() {
    // Reentrant, last block stored: no error, no NaN — but blocks 0–2 never train.
    let cfg = ReproConfig::default();
    let m = model(cfg);
    let seg = all_but_last(cfg.blocks);
    let (ids, targets) = data(&cfg, 12);
    let loss = m.loss(&ids, &targets, &seg, MODE_R).unwrap();
    assert!(
        loss.requires_grad(),
        "block 3's parameters give the loss a grad path"
    );
    let findings = diagnose(&loss, &m.named_parameters());
    let flagged: Vec<&str> = findings.iter().map(|f| f.param.as_str()).collect();
    let expect: Vec<String> = m
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            ["blocks.0.", "blocks.1.", "blocks.2."]
                .iter()
                .any(|b| n.starts_with(b))
        })
        .collect();
    assert_eq!(flagged, expect);
    assert_eq!(findings[0].segment.as_deref(), Some("blocks.0"));
    assert!(
        findings[0]
            .reason
            .contains("reentrant segment `blocks.0` has no input that requires grad")
    );
    loss.backward().unwrap();
    warnings::take();
    for (name, p) in m.named_parameters() {
        let trained = p.grad().is_some();
        assert_eq!(trained, name.starts_with("blocks.3."), "{name}");
    }
    // Storing block 1 instead starves only block 0.
    let mut seg = every(cfg.blocks);
    seg.segments[1].checkpointed = false;
    let g = grads(&m, &seg, MODE_R, false);
    assert!(
        g.iter()
            .all(|(n, g)| g.is_none() == (n.starts_with("blocks.0.") || !n.starts_with("blocks.")))
    );
}

#[test]
fn lora_adapters_on_frozen_base_reproduce_and_fix_the_same_way() {
    let cfg = ReproConfig {
        lora_rank: 4,
        ..ReproConfig::default()
    };
    let m = model(cfg);
    let (ids, targets) = data(&cfg, 12);
    let loss = m.loss(&ids, &targets, &every(cfg.blocks), MODE_R).unwrap();
    assert_eq!(
        loss.backward().unwrap_err().to_string(),
        "element 0 of tensors does not require grad and does not have a grad_fn"
    );
    warnings::take();
    let store = grads(&m, &Segmentation::store_all(cfg.blocks), MODE_NR, false);
    let trained: Vec<&String> = store
        .iter()
        .filter(|(_, g)| g.is_some())
        .map(|(n, _)| n)
        .collect();
    assert!(
        trained
            .iter()
            .all(|n| n.contains("lora_") || n.contains(".ln.")),
        "{trained:?}"
    );
    assert_eq!(grads(&m, &every(cfg.blocks), MODE_NR, false), store);
    assert_eq!(grads(&m, &every(cfg.blocks), MODE_R, true), store);
}

#[test]
fn recompute_replays_dropout_mask() {
    let cfg = ReproConfig {
        dropout: 0.2,
        ..ReproConfig::default()
    };
    let m = model(cfg);
    let store = grads(&m, &Segmentation::store_all(cfg.blocks), MODE_NR, false);
    assert_eq!(grads(&m, &every(cfg.blocks), MODE_NR, false), store);
    assert_eq!(grads(&m, &every(cfg.blocks), MODE_R, true), store);
    // Without restoring the generator, the masks would differ: check the masks do matter.
    let no_dropout = grads(
        &model(ReproConfig::default()),
        &Segmentation::store_all(cfg.blocks),
        MODE_NR,
        false,
    );
    assert_ne!(store, no_dropout);
}

fn mlp_grads(
    m: &ResidualMlp,
    x: &Tensor,
    seg: &Segmentation,
    mode: CheckpointMode,
) -> Vec<Vec<u32>> {
    for p in m.parameters() {
        p.zero_grad();
    }
    let y = rewind::checkpoint::run_blocks(&m.modules(), x, seg, mode, "blocks").unwrap();
    y.mean().unwrap().backward().unwrap();
    m.parameters()
        .iter()
        .map(|p| {
            p.grad()
                .unwrap()
                .to_vec_f32()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

/// A seeded `[rows, d]` input that requires grad (so segment inputs carry gradients too).
fn input(rows: usize, d: usize) -> Tensor {
    let v: Vec<f32> = rewind::rng::normal_vec(rows * d)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    Tensor::from_vec(v, &[rows, d])
        .unwrap()
        .requires_grad_(true)
        .unwrap()
}

#[test]
fn checkpointed_grads_are_bit_identical_to_stored() {
    rewind::rng::manual_seed(3);
    let mlp = ResidualMlp::new(9, 16, 32).unwrap();
    let x = input(8, 16);
    let costs = BlockCosts::measure(&mlp.modules(), &x).unwrap();
    let store = mlp_grads(&mlp, &x, &Segmentation::store_all(9), MODE_NR);
    let full = Segmentation::store_all(9).predicted_peak(&costs);
    for p in [
        Plan::EveryBlock,
        Plan::EveryK(2),
        Plan::EveryK(4),
        Plan::Sequential(2),
        Plan::Sequential(4),
        Plan::Sqrt,
        Plan::Budget(full / 2),
        Plan::Budget(full / 4),
    ] {
        let seg = plan::segment(p, 9, Some(&costs)).unwrap();
        for mode in [MODE_R, MODE_NR] {
            assert_eq!(
                mlp_grads(&mlp, &x, &seg, mode),
                store,
                "{p:?} {mode:?} ({})",
                seg.describe()
            );
        }
    }
    let cfg = ReproConfig {
        blocks: 6,
        dropout: 0.1,
        ..ReproConfig::default()
    };
    let m = model(cfg);
    let store = grads(&m, &Segmentation::store_all(6), MODE_NR, false);
    for p in [Plan::EveryBlock, Plan::EveryK(3), Plan::Sqrt] {
        let seg = plan::segment(p, 6, None).unwrap();
        assert_eq!(grads(&m, &seg, MODE_NR, false), store, "{p:?}");
        assert_eq!(
            grads(&m, &seg, MODE_R, true),
            store,
            "{p:?} reentrant + fix a"
        );
    }
}

#[test]
fn nested_segments_recompute_correctly() {
    rewind::rng::manual_seed(5);
    let mlp = ResidualMlp::new(4, 8, 16).unwrap();
    let x = input(4, 8);
    let store = mlp_grads(&mlp, &x, &Segmentation::store_all(4), MODE_NR);
    let mods = mlp.modules();
    for mode in [MODE_R, MODE_NR] {
        for p in mlp.parameters() {
            p.zero_grad();
        }
        let inner = mods.clone();
        // An outer segment over all four blocks whose body checkpoints each pair.
        let body: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| {
            let seg = plan::segment(Plan::EveryK(2), 4, None)?;
            rewind::checkpoint::run_blocks(&inner, &xs[0], &seg, mode, "inner")
        });
        let y = checkpoint("outer", mode, &[&x], body).unwrap();
        y.mean().unwrap().backward().unwrap();
        let got: Vec<Vec<u32>> = mlp
            .parameters()
            .iter()
            .map(|p| {
                p.grad()
                    .unwrap()
                    .to_vec_f32()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect();
        assert_eq!(got, store, "{mode:?}");
        assert_eq!(tape::saved_bytes(), 0);
    }
}

#[test]
fn checkpoint_every_block_saves_only_block_inputs() {
    // Store: each block saves its input (but block 0's input is the caller's), gelu's input and
    // fc2's input. Every block: each segment saves only its input.
    let (rows, d, h, n) = (8, 16, 32, 4);
    rewind::rng::manual_seed(1);
    let mlp = ResidualMlp::new(n, d, h).unwrap();
    let x = Tensor::from_vec(vec![0.5f32; rows * d], &[rows, d]).unwrap();
    tape::clear();
    let y = rewind::checkpoint::run_blocks(
        &mlp.modules(),
        &x,
        &Segmentation::store_all(n),
        MODE_NR,
        "b",
    )
    .unwrap();
    assert_eq!(
        tape::saved_bytes(),
        4 * (n * 2 * rows * h + (n - 1) * rows * d)
    );
    drop(y);
    tape::clear();
    tape::reset_peak_saved_bytes();
    let y = rewind::checkpoint::run_blocks(&mlp.modules(), &x, &every(n), MODE_NR, "b").unwrap();
    assert_eq!(
        tape::saved_bytes(),
        4 * (n - 1) * rows * d,
        "block 0's input is the caller's"
    );
    assert_eq!(
        tape::peak_saved_bytes(),
        tape::saved_bytes(),
        "the forward never held a block's activations"
    );
    y.mean().unwrap().backward().unwrap();
    // During backward one block at a time is recomputed: the held inputs plus one block.
    assert_eq!(
        tape::peak_saved_bytes(),
        4 * ((n - 1) * rows * d + 2 * rows * h)
    );
    assert_eq!(tape::saved_bytes(), 0, "nothing saved is left behind");
    assert_eq!(tape::live_entries(), 0);
}

#[test]
fn recomputation_that_differs_is_a_clear_error() {
    // A body that saves a different number of tensors when rerun.
    let w = Tensor::from_vec(vec![0.5f32; 4], &[4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    // An activation (the output of an op), so the segment's saved input counts as saved bytes.
    let x = Tensor::from_vec(vec![1.0f32; 4], &[4])
        .unwrap()
        .tanh()
        .unwrap();
    let calls = Rc::new(std::cell::Cell::new(0));
    let (w2, c2) = (w.clone(), calls.clone());
    let body: rewind::checkpoint::Body = Rc::new(move |xs: &[Tensor]| {
        c2.set(c2.get() + 1);
        let y = xs[0].mul(&w2)?;
        if c2.get() > 1 { y.tanh() } else { Ok(y) }
    });
    let y = checkpoint("flaky", MODE_NR, &[&x], body).unwrap();
    let err = y.sum().unwrap().backward().unwrap_err();
    assert!(matches!(err, Error::Checkpoint(_)));
    rewind::tape::clear();
    assert_eq!(
        rewind::tape::saved_bytes(),
        0,
        "a failed backward leaves nothing saved behind once the tape is cleared"
    );
    assert!(
        err.to_string()
            .starts_with("torch.utils.checkpoint: A different number of tensors was saved"),
        "{err}"
    );
}

#[test]
fn reentrant_recompute_without_grad_output_fails_like_pytorch() {
    let x = Tensor::from_vec(vec![1.0f32; 4], &[4])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let body: rewind::checkpoint::Body =
        Rc::new(|xs: &[Tensor]| Ok(xs[0].mul_scalar(2.0)?.detach()));
    let y = checkpoint("detached", MODE_R, &[&x], body).unwrap();
    assert!(
        y.requires_grad(),
        "reentrant: an input requires grad, so the output does"
    );
    let err = y.sum().unwrap().backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        "none of output has requires_grad=True, this checkpoint() is not necessary"
    );
}
