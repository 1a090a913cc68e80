//! `rewind train` on the Llama, Qwen2, GLM and ChatGLM3 checkpoints of the fixtures: full fine-tuning and
//! LoRA on PEFT's defaults with checkpointing, selective policies naming the model's own
//! tensors, AMP and 8-bit AdamW, resumed bit for bit; the original report on a Llama —
//! frozen embeddings, LoRA, a reentrant checkpoint per layer — fails with PyTorch's warning and
//! error, and both fixes train the adapters alone; transformers' activation-checkpointing
//! defaults change no bit.

#[path = "../../tests/common/mod.rs"]
mod common;

use rewind::checkpoint::CheckpointMode;
use rewind::error::NO_GRAD_FN_MSG;
use rewind_lab::models::lm::Checkpoint;
use rewind_lab::train::{
    AmpChoice, OptimChoice, PlanChoice, PolicyChoice, TrainConfig, Trainer, suggest_fix,
};

/// The fixture `name` as `train --model` configures it (its sizes, PEFT's default targets).
fn family(name: &str) -> TrainConfig {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let s = ckpt.sizes;
    let mut c = TrainConfig {
        d: s.d,
        heads: s.heads,
        layers: s.layers,
        vocab: s.vocab,
        max_len: 32,
        batch_size: 4,
        lr: 5e-3,
        lora_targets: ckpt
            .family
            .default_lora_targets
            .iter()
            .map(|t| t.to_string())
            .collect(),
        model: Some(ckpt),
        ..TrainConfig::default()
    };
    c.corpus.samples = 40;
    c
}

fn weight_bits(t: &Trainer) -> Vec<(String, Vec<u32>)> {
    t.model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, common::bits(&p)))
        .collect()
}

fn steps(t: &mut Trainer, n: usize) {
    for _ in 0..n {
        t.step().unwrap();
    }
}

#[test]
fn every_family_fine_tunes_with_every_technique_and_resumes_bit_identically() {
    let names = PolicyChoice::SaveNames(vec!["attn_probs".to_string()]);
    for name in ["llama-tiny", "qwen2-tiny", "glm-tiny", "chatglm3-tiny"] {
        // The last row's LoRA dropout draws masks from the engine generator: the resume
        // restores its state, so the masks (and the weights) continue bit for bit.
        for (lora_rank, lora_dropout, plan, policy, optimizer, amp) in [
            (
                0,
                0.0,
                PlanChoice::None,
                PolicyChoice::RecomputeAll,
                OptimChoice::AdamW,
                AmpChoice::Off,
            ),
            (
                4,
                0.0,
                PlanChoice::Every,
                PolicyChoice::SaveMatmuls,
                OptimChoice::AdamW8bit,
                AmpChoice::Off,
            ),
            (
                4,
                0.1,
                PlanChoice::Every,
                names.clone(),
                OptimChoice::AdamW,
                AmpChoice::Fp16,
            ),
            (
                0,
                0.0,
                PlanChoice::Every,
                PolicyChoice::RecomputeAll,
                OptimChoice::AdamW,
                AmpChoice::Bf16,
            ),
        ] {
            let what = format!(
                "{name} lora {lora_rank} dropout {lora_dropout} {plan} {policy:?} amp {amp:?}"
            );
            let cfg = TrainConfig {
                lora_rank,
                lora_dropout,
                plan,
                policy,
                optimizer,
                amp,
                ..family(name)
            };
            let mut straight = Trainer::new(cfg.clone()).unwrap();
            // LoRA on PEFT's defaults (q_proj and v_proj; ChatGLM3's query_key_value):
            // 2 layers × targets × (A, B).
            if lora_rank > 0 {
                assert_eq!(
                    straight.trainable_tensors(),
                    2 * cfg.lora_targets.len() * 2,
                    "{what}"
                );
            }
            let first = straight.eval_loss().unwrap();
            steps(&mut straight, 4);
            let mut a = Trainer::new(cfg.clone()).unwrap();
            steps(&mut a, 2);
            let bytes = a.save_bytes().unwrap();
            let mut b = Trainer::resume_from_bytes(cfg, &bytes).unwrap();
            steps(&mut b, 2);
            // Both at step 4.
            assert!(
                weight_bits(&b) == weight_bits(&straight),
                "{what}: resume differs"
            );
            let last = straight.eval_loss().unwrap();
            assert!(
                last < first,
                "{what}: held-out loss {first} → {last} did not fall"
            );
        }
    }
}

#[test]
fn the_original_report_on_a_llama_fails_like_pytorch_and_both_fixes_train_the_adapters() {
    let failing = TrainConfig {
        lora_rank: 4,
        plan: PlanChoice::Every,
        mode: CheckpointMode::Reentrant,
        ..family("llama-tiny")
    };
    rewind::warnings::take();
    let err = Trainer::new(failing.clone()).unwrap().step().unwrap_err();
    assert_eq!(err.to_string(), NO_GRAD_FN_MSG);
    let explained = format!("{err:#}");
    for layer in ["model.layers.0", "model.layers.1"] {
        assert!(
            explained.contains(&format!("reentrant segment `{layer}`")),
            "{explained}"
        );
    }
    assert_eq!(
        rewind::warnings::take(),
        vec!["None of the inputs have requires_grad=True. Gradients will be None"; 2],
        "PyTorch's warning, once per layer"
    );
    assert!(suggest_fix(&failing, &err).is_some());
    rewind::tape::clear();
    let mut trained = Vec::new();
    for fixed in [
        TrainConfig {
            enable_input_require_grads: true,
            ..failing.clone()
        },
        TrainConfig {
            mode: CheckpointMode::NonReentrant,
            ..failing.clone()
        },
    ] {
        let mut t = Trainer::new(fixed).unwrap();
        let before = weight_bits(&t);
        steps(&mut t, 2);
        let after = weight_bits(&t);
        let changed: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0.as_str())
            .collect();
        assert_eq!(changed.len(), 2 * 2 * 2, "{changed:?}");
        assert!(changed.iter().all(|n| n.contains(".lora_")));
        trained.push(after);
    }
    assert!(trained[0] == trained[1], "both fixes give the same weights");
}

#[test]
fn transformers_activation_checkpointing_on_a_qwen2_changes_no_bit() {
    let base = TrainConfig {
        lora_rank: 4,
        ..family("qwen2-tiny")
    };
    let mut stored = Trainer::new(base.clone()).unwrap();
    steps(&mut stored, 2);
    let mut t = Trainer::new(TrainConfig {
        plan: PlanChoice::EveryNth(1),
        mode: CheckpointMode::NonReentrant,
        enable_input_require_grads: true,
        ..base
    })
    .unwrap();
    steps(&mut t, 2);
    assert!(weight_bits(&t) == weight_bits(&stored));
}
