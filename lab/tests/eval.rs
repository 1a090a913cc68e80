//! `rewind eval` gives transformers' token-weighted mean next-token loss: on
//! `tests/fixtures/eval/text.txt`, one sample per paragraph truncated to 48 tokens, for the tiny
//! GPT-2, Llama (with and without its PEFT adapter, and with a tokenizer whose post-processor adds
//! a BOS: eval encodes as the library's `encode` does) and Qwen2 — within 1e-5 relative of the value
//! `scripts/eval_fixture.py` recorded (transformers 5.25, each paragraph run alone, unpadded), in
//! batches of 1 and of 4 (padded, grouped by length). The binary prints it as a table and one
//! JSON line.

use rewind_lab::eval::{EvalOptions, run};
use rewind_lab::models::lm::Checkpoint;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("eval/reference.json")).unwrap()).unwrap()
}

/// `model`'s fixture with a tokenizer that puts `<|endoftext|>` (id 0) first, as
/// `scripts/eval_fixture.py` builds it, in a fresh directory.
fn with_bos(model: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewind-eval-bos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), dir.join(f)).unwrap();
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("tokenizer.json")).unwrap())
            .unwrap();
    tok["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                             "tokens": ["<|endoftext|>"]}},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

#[test]
fn eval_gives_transformers_mean_loss_for_every_family_with_and_without_an_adapter() {
    let r = reference();
    let max_len = r["max_len"].as_u64().unwrap() as usize;
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    for run_ref in runs {
        let base = fixture(run_ref["model"].as_str().unwrap());
        let dir = if run_ref["bos"] == true {
            with_bos(&base)
        } else {
            base.clone()
        };
        let adapter = run_ref["adapter"].as_str().map(|a| base.join(a));
        let want = run_ref["loss"].as_f64().unwrap();
        for batch_size in [1, 4] {
            let got = run(&EvalOptions {
                model: Checkpoint::open(&dir).unwrap(),
                text_file: fixture("eval/text.txt"),
                max_len: Some(max_len),
                batch_size,
                adapter: adapter.clone(),
            })
            .unwrap();
            let what = format!("{} adapter {:?} batch {batch_size}", dir.display(), adapter);
            assert_eq!(
                got.tokens as u64,
                run_ref["tokens"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                got.samples as u64,
                run_ref["samples"].as_u64().unwrap(),
                "{what}"
            );
            assert!(
                (got.loss - want).abs() <= 1e-5 * want,
                "{what}: loss {} vs transformers' {want}",
                got.loss
            );
            assert!((got.perplexity - want.exp()).abs() <= 2e-5 * want.exp());
        }
    }
}

#[test]
fn the_binary_prints_a_table_and_one_json_line_with_loss_perplexity_and_tokens() {
    let r = reference();
    let llama = &r["runs"][1];
    assert_eq!(llama["model"], "llama-tiny");
    assert!(llama["adapter"].is_null());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["eval", "--model"])
        .arg(fixture("llama-tiny"))
        .arg("--text-file")
        .arg(fixture("eval/text.txt"))
        .args(["--max-len", "48", "--batch-size", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("perplexity"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let want = llama["loss"].as_f64().unwrap();
    let loss = json["loss"].as_f64().unwrap();
    assert!((loss - want).abs() <= 1e-5 * want, "{loss} vs {want}");
    assert_eq!(json["tokens"], llama["tokens"]);
    assert!((json["perplexity"].as_f64().unwrap() - loss.exp()).abs() <= 1e-9 * loss.exp());
}

#[test]
fn max_len_defaults_to_the_models_positions_and_truncates_each_paragraph() {
    // llama-tiny has 64 positions: every paragraph keeps at most 64 tokens, 63 predicted.
    let got = run(&EvalOptions {
        model: Checkpoint::open(&fixture("llama-tiny")).unwrap(),
        text_file: fixture("eval/text.txt"),
        max_len: None,
        batch_size: 2,
        adapter: None,
    })
    .unwrap();
    assert_eq!(got.max_len, 64);
    let at_48 = reference()["runs"][1]["tokens"].as_u64().unwrap() as usize;
    assert!(
        got.tokens > at_48,
        "a 64-token window predicts more than a 48-token one"
    );
    assert!(got.tokens <= 63 * got.samples);
}
