//! `rewind memory --model`: predictions from config.json alone against what the trainer
//! measures on the tiny fixtures (the engine's own accounting: f32 parameters, gradients,
//! optimizer state, and the peak bytes the tape held saved during a step) — within 10% for
//! every family, method, optimizer and plan; and ChatGLM3-6B's published size.

use rewind::checkpoint::Plan;
use rewind_lab::memory_model::{Arch, Method, Optim, estimate};
use rewind_lab::models::lm::Checkpoint;
use rewind_lab::train::{OptimChoice, PaddingChoice, PlanChoice, TrainConfig, Trainer};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

#[test]
fn predictions_are_within_ten_percent_of_the_measured_step() {
    let (b, t) = (2, 48);
    let mut worst: f64 = 0.0;
    for name in ["chatglm3-tiny", "glm-tiny", "llama-tiny", "qwen2-tiny"] {
        let ckpt = Checkpoint::open(&fixture(name)).unwrap();
        let glm = name.contains("glm");
        for method in [Method::Full, Method::Lora(4), Method::Prefix(8)] {
            if !glm && matches!(method, Method::Prefix(_)) {
                continue;
            }
            for (plan, seg) in [
                (PlanChoice::None, None),
                (PlanChoice::Every, Some(Plan::EveryBlock)),
            ] {
                for (optimizer, optim) in [
                    (OptimChoice::AdamW, Optim::AdamW),
                    (OptimChoice::AdamW8bit, Optim::AdamW8bit),
                ] {
                    let s = ckpt.sizes;
                    let cfg = TrainConfig {
                        d: s.d,
                        heads: s.heads,
                        layers: s.layers,
                        vocab: s.vocab,
                        max_len: t,
                        batch_size: b,
                        lora_rank: if let Method::Lora(r) = method { r } else { 0 },
                        prefix_tokens: if let Method::Prefix(p) = method { p } else { 0 },
                        lora_targets: ckpt
                            .family
                            .default_lora_targets
                            .iter()
                            .map(|t| t.to_string())
                            .collect(),
                        plan,
                        optimizer,
                        padding: PaddingChoice::Fixed,
                        model: Some(ckpt.clone()),
                        ..TrainConfig::default()
                    };
                    let mut tr = Trainer::new(cfg).unwrap();
                    let step = tr.step().unwrap();
                    let measured_acts = step.peak_saved_bytes as f64;
                    let measured = (tr.param_bytes()
                        + step.grad_bytes
                        + tr.optimizer_state_bytes()
                        + step.peak_saved_bytes) as f64;
                    let a = Arch::from_checkpoint(&ckpt).unwrap();
                    let fused = ckpt.family.model_type == "chatglm";
                    let e = estimate(&a, fused, method, optim, seg, b, t).unwrap();
                    let what = format!("{name} {method:?} {plan} {optim:?}");
                    let acts = (e.activations as f64 - measured_acts).abs() / measured_acts;
                    let total = (e.total() as f64 - measured).abs() / measured;
                    assert!(
                        acts <= 0.10,
                        "{what}: activations {} vs {measured_acts}",
                        e.activations
                    );
                    assert!(total <= 0.10, "{what}: total {} vs {measured}", e.total());
                    worst = worst.max(acts);
                }
            }
        }
    }
    eprintln!("largest activation error {:.1}%", 100.0 * worst);
}

#[test]
fn chatglm3_6b_has_its_published_parameter_count() {
    let ckpt = Checkpoint::open(&fixture("chatglm3-6b")).unwrap();
    // 28 layers of 4096 (32 heads over 2 groups of 128), MLP 13696, 65024 ids, untied head:
    // 6,243,584,000 parameters.
    assert_eq!(
        Arch::from_checkpoint(&ckpt).unwrap().params(),
        6_243_584_000
    );
    let table = rewind_lab::memory_model::table(&ckpt, 4, 512, 8, 128).unwrap();
    assert!(
        table.contains("| LoRA r 8 (query_key_value) | AdamW | every layer |"),
        "{table}"
    );
    assert!(table.contains("P-tuning v2, 128 prefix"));
}
