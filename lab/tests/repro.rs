//! `rewind repro` end to end on a small model: every reproduced behaviour holds.

use rewind_lab::models::ReproConfig;
use rewind_lab::repro::{ReproOptions, run_story};

#[test]
fn repro_story_holds_end_to_end() {
    let opts = ReproOptions {
        model: ReproConfig {
            vocab: 32,
            d: 16,
            hidden: 32,
            blocks: 4,
            lora_rank: 0,
            dropout: 0.1,
        },
        rows: 24,
        reps: 1,
    };
    let mut lines = Vec::new();
    let report = run_story(&opts, &mut |l| lines.push(l.to_string())).unwrap();
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.held).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", lines.join("\n"));
    assert_eq!(report.checks.len(), 14);
    assert_eq!(report.fixes.len(), 3);
    let (a, b, c) = (&report.fixes[0], &report.fixes[1], &report.fixes[2]);
    assert_eq!(
        a.peak_saved, b.peak_saved,
        "fixes a and b checkpoint the same segments"
    );
    assert!(
        c.peak_saved > 2 * b.peak_saved,
        "no checkpointing keeps every block's activations"
    );
    assert!(lines.iter().any(|l| l.contains(
        "RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn"
    )));
    // The silent variant shows PyTorch's only symptom and counts tensors as the header does.
    let has = |s: &str| lines.iter().any(|l| l.contains(s));
    assert!(has("24 trainable tensors ("), "{}", lines.join("\n"));
    assert!(has(
        "warning: None of the inputs have requires_grad=True. Gradients will be None   (×3"
    ));
    assert!(has(
        "loss.requires_grad is true: block 3 runs outside any checkpoint"
    ));
    assert!(has("18 of the 24 trainable tensors will get no gradient"));
    assert!(has(
        "segment blocks.0: ln.weight, ln.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias"
    ));
}
