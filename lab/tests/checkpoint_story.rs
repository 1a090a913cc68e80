//! The checkpointing story on the repro model (frozen embedding → blocks → frozen head):
//! PyTorch's reentrant failure reproduced, its three fixes, the silent variant, LoRA, dropout
//! replay, and bit-identical gradients for every plan and mode.

use rewind::checkpoint::{
    CheckpointMode, NO_INPUT_REQUIRES_GRAD_WARNING, Plan, Segmentation, diagnose, plan,
};
use rewind::nn::Parameters;
use rewind::{Indices, warnings};
use rewind_lab::models::{ReproConfig, ReproModel};

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

#[path = "../../tests/common/mod.rs"]
mod common;
use common::every;

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
        .map(|(n, p)| (n, p.grad().map(|g| common::bits(&g))))
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
    assert!(why.contains("reentrant segment `blocks.0` has no input that requires grad; its 6 trainable parameter tensors are captured"), "{why}");
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

#[test]
fn checkpointed_repro_model_grads_are_bit_identical_to_stored() {
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
