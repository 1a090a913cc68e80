//! `rewind repro --model DIR`: the original report told on the user's checkpoint — LoRA on
//! PEFT's defaults (THUDM's r 8, α 32), a reentrant checkpoint around each layer: PyTorch's
//! warning per layer and error, the diagnosis naming the layers, THUDM's fix and the
//! non-reentrant one giving the stored LoRA gradients bit for bit — on every family's fixture,
//! and on ChatGLM3-6B's published config.json alone (a tiny random model of its architecture).

use rewind_lab::models::lm::Checkpoint;
use rewind_lab::repro_model::{ModelStoryOptions, run_model_story};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn story(name: &str, tiny: Option<&str>) -> Vec<String> {
    let opts = ModelStoryOptions {
        ckpt: Checkpoint::open(&fixture(name)).unwrap(),
        tiny: tiny.map(str::to_string),
        reps: 1,
    };
    let mut lines = Vec::new();
    let r = run_model_story(&opts, &mut |l| lines.push(l.to_string())).unwrap();
    let failed: Vec<_> = r.checks.iter().filter(|c| !c.held).collect();
    assert!(
        failed.is_empty(),
        "{name}: {failed:?}\n{}",
        lines.join("\n")
    );
    // ChatGLM's families also tell P-tuning v2's story.
    let glm = name.contains("glm");
    assert_eq!(r.checks.len(), if glm { 12 } else { 9 }, "{name}");
    lines
}

#[test]
fn the_original_report_on_a_chatglm3_checkpoint_fails_like_pytorch_and_both_fixes_hold() {
    let lines = story("chatglm3-tiny", None).join("\n");
    assert!(
        lines.contains("LoRA r 8, alpha 32, dropout 0.1 on query_key_value"),
        "{lines}"
    );
    assert!(lines.contains("reentrant segment `transformer.encoder.layers.1`"));
}

#[test]
fn every_family_tells_the_story_on_its_own_checkpoint() {
    for name in ["gpt2-tiny", "llama-tiny", "qwen2-tiny", "glm-tiny"] {
        story(name, None);
    }
}

#[test]
fn chatglm3_6b_config_alone_is_told_on_a_tiny_model_of_its_architecture() {
    let ckpt = Checkpoint::open(&fixture("chatglm3-6b")).unwrap();
    // ChatGLM3-6B: 28 layers, hidden 4096, 32 heads over 2 groups, 65024 ids.
    assert_eq!(
        (ckpt.sizes.layers, ckpt.sizes.d, ckpt.sizes.vocab),
        (28, 4096, 65024)
    );
    let lines = story("chatglm3-6b", Some("its weights are not in the directory")).join("\n");
    assert!(lines.contains("Told on a tiny random model"), "{lines}");
    // Grouped queries survive the shrinking: 4 heads over 2 groups.
    let tiny = (ckpt.family.tiny)(&ckpt.config, 0, 0.0, &[]).unwrap();
    let qkv = tiny
        .named_parameters()
        .into_iter()
        .find(|(n, _)| n.ends_with("layers.0.self_attention.query_key_value.weight"))
        .unwrap()
        .1;
    assert_eq!(qkv.shape(), [(4 + 2 * 2) * 16, 64]);
}

#[test]
fn repro_model_on_the_command_line_needs_only_config_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["repro", "--reps", "1", "--model"])
        .arg(fixture("chatglm3-6b"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("All 12 reproduced behaviours held.")
            && stdout.contains("THUDM's fix is no fix here"),
        "{stdout}"
    );
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["repro", "--model", "/nonexistent/chatglm3"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--model"));
}
