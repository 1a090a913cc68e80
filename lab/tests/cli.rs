//! The `rewind` binary: `train` prints a JSON summary, saves and resumes, and fails the
//! reentrant + frozen-embedding configuration with PyTorch's message and the fix.

use std::process::Command;

const TINY: &[&str] = &[
    "--d",
    "16",
    "--heads",
    "2",
    "--layers",
    "2",
    "--max-len",
    "32",
    "--vocab",
    "300",
    "--samples",
    "40",
    "--batch-size",
    "4",
    "--quiet",
];

fn rewind(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn train_prints_a_json_summary_and_resumes_from_its_save() {
    let dir = std::env::temp_dir().join(format!("rewind-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let save = dir.join("run.safetensors");
    let save = save.to_str().unwrap();
    let mut args = vec![
        "train",
        "--steps",
        "2",
        "--optimizer",
        "adamw8bit",
        "--save",
        save,
    ];
    args.extend_from_slice(TINY);
    let out = rewind(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["total_steps"], 2);
    assert_eq!(v["config"]["optimizer"], "adamw8bit");
    // Typed values, one schema (README): numbers, booleans, null for what does not apply.
    assert_eq!(v["config"]["d"], 16);
    assert_eq!(v["config"]["amp"], false);
    assert_eq!(v["config"]["lr"], 3e-3);
    assert_eq!(v["config"]["corpus_samples"], 40);
    assert!(v["config"]["text_file"].is_null());
    assert!(v["loss_scale"].is_null());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "config",
            "eval_loss",
            "grad_bytes",
            "loss_scale",
            "median_step_s",
            "optimizer_state_bytes",
            "padded_fraction",
            "param_bytes",
            "peak_saved_bytes",
            "skipped_steps",
            "steps",
            "tokens_per_s",
            "total_steps",
            "train_loss",
            "trainable_params",
            "trainable_tensors"
        ]
    );
    assert!(v["eval_loss"].as_f64().unwrap().is_finite());

    let mut resume = vec![
        "train",
        "--steps",
        "1",
        "--optimizer",
        "adamw8bit",
        "--resume",
        save,
    ];
    resume.extend_from_slice(TINY);
    let out = rewind(&resume);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_steps"], 3);

    // Resuming with other flags names the difference.
    let mut wrong = vec!["train", "--steps", "1", "--resume", save];
    wrong.extend_from_slice(TINY);
    let out = rewind(&wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(r#"optimizer: saved "adamw8bit", now "adamw""#)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reentrant_lora_run_fails_with_pytorchs_message_and_suggests_the_fix() {
    let mut args = vec![
        "train",
        "--steps",
        "1",
        "--lora-rank",
        "4",
        "--checkpoint",
        "every",
        "--checkpoint-mode",
        "reentrant",
    ];
    args.extend_from_slice(TINY);
    let out = rewind(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: None of the inputs have requires_grad=True. Gradients will be None")
    );
    assert!(
        err.contains(
            "error: element 0 of tensors does not require grad and does not have a grad_fn"
        )
    );
    assert!(err.contains("reentrant segment `model.layers.0`"), "{err}");
    assert!(
        err.contains("fix: rerun with --enable-input-require-grads"),
        "{err}"
    );

    args.push("--enable-input-require-grads");
    let out = rewind(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compare_and_repro_exit_codes_match_their_printed_verdicts() {
    let out_dir = std::env::temp_dir().join(format!("rewind-cli-compare-{}", std::process::id()));
    let out_dir = out_dir.to_str().unwrap();
    let mut args = vec!["compare", "--steps", "2", "--out", out_dir];
    args.extend(TINY.iter().filter(|a| **a != "--quiet"));
    let out = rewind(&args);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("targets:"), "{printed}");
    // Two steps are too few for every target: exit 3 exactly when one says NOT met.
    let expected = if printed.contains("NOT met") { 3 } else { 0 };
    assert_eq!(out.status.code(), Some(expected), "{printed}");
    std::fs::remove_dir_all(out_dir).ok();

    let out = rewind(&["repro", "--reps", "1", "--blocks", "2"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("reproduced behaviours held"), "{printed}");
    assert_eq!(out.status.code(), Some(0));

    // A budget the model cannot meet names the flag.
    let mut args = vec!["train", "--steps", "1", "--checkpoint", "budget:0"];
    args.extend_from_slice(TINY);
    let out = rewind(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: --checkpoint budget:0B: a budget of 0 bytes"),
        "{err}"
    );
}

#[test]
fn train_model_writes_a_peft_adapter_and_a_merged_transformers_checkpoint() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gpt2-tiny");
    let dir = std::env::temp_dir().join(format!("rewind-cli-merge-{}", std::process::id()));
    let (adapter, merged) = (dir.join("adapter"), dir.join("merged"));
    let out = rewind(&[
        "train",
        "--model",
        fixture,
        "--max-len",
        "32",
        "--samples",
        "40",
        "--batch-size",
        "4",
        "--lora-rank",
        "4",
        "--steps",
        "2",
        "--quiet",
        "--save-adapter",
        adapter.to_str().unwrap(),
        "--merge",
        merged.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trainable_tensors"], 4);
    assert!(
        v["config"]["model"]
            .as_str()
            .unwrap()
            .ends_with("gpt2-tiny")
    );
    // The adapter reloads onto the base, the merged model loads as a plain GPT-2.
    let mut m = rewind_lab::models::Gpt2::load(std::path::Path::new(fixture)).unwrap();
    m.load_adapter(&adapter).unwrap();
    let merged = rewind_lab::models::Gpt2::load(&merged).unwrap();
    assert_eq!(merged.cfg, m.cfg);
    std::fs::remove_dir_all(&dir).ok();
}
