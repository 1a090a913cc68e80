//! Conversation data as THUDM's ChatGLM3 finetune_demo takes it: each line of a JSON-lines file
//! rendered in ChatGLM3's chat format gives the demo's `process_batch` ids and labels
//! (`scripts/conversation_fixture.py`, ChatGLM3's tokenizer restated on sentencepiece 0.2.3);
//! the trainer scores exactly those labels; a bad line is an error naming its number;
//! `train --data` fine-tunes the ChatGLM3 fixture with LoRA.

use rewind_lab::data::{Padding, Tokenizer, batches, read_conversations, render_chatglm3};
use rewind_lab::models::lm::Checkpoint;
use rewind_lab::train::{Data, TrainConfig, Trainer};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn reference() -> (Vec<Vec<u32>>, Vec<Vec<i64>>) {
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("conversations/reference.json")).unwrap(),
    )
    .unwrap();
    (
        serde_json::from_value(r["input_ids"].clone()).unwrap(),
        serde_json::from_value(r["labels"].clone()).unwrap(),
    )
}

#[test]
fn conversations_render_as_the_chatglm3_demo_builds_them() {
    let tok = Tokenizer::from_dir(&fixtures().join("chatglm3-tiny")).unwrap();
    let (convs, _) = read_conversations(&fixtures().join("conversations/train.jsonl")).unwrap();
    let (ids, labels) = reference();
    assert_eq!(convs.len(), ids.len());
    for (i, c) in convs.iter().enumerate() {
        let (got_ids, got_labels) = render_chatglm3(&tok, c).unwrap();
        assert_eq!(got_ids, ids[i], "conversation {i}: ids");
        assert_eq!(got_labels, labels[i], "conversation {i}: labels");
    }
}

fn config(max_len: usize) -> TrainConfig {
    let ckpt = Checkpoint::open(&fixtures().join("chatglm3-tiny")).unwrap();
    let s = ckpt.sizes;
    TrainConfig {
        d: s.d,
        heads: s.heads,
        layers: s.layers,
        vocab: s.vocab,
        max_len,
        batch_size: 2,
        lr: 1e-2,
        lora_rank: 4,
        lora_targets: vec!["query_key_value".into()],
        model: Some(ckpt),
        data_file: Some(fixtures().join("conversations/train.jsonl")),
        eval_fraction: 0.34,
        ..TrainConfig::default()
    }
}

#[test]
fn the_trainer_scores_the_assistant_tokens_only_shifted_as_transformers_shifts_them() {
    let data = Data::build(&config(64)).unwrap();
    let (ids, labels) = reference();
    let samples: Vec<_> = data.train.iter().chain(&data.eval).collect();
    assert_eq!(samples.len(), ids.len());
    for (i, s) in samples.iter().enumerate() {
        let n = ids[i].len().min(64);
        assert_eq!(s.ids, ids[i][..n], "conversation {i}");
        let b = &batches(&[(*s).clone()], 1, Padding::Dynamic, 0).unwrap()[0];
        // Position p is scored on label p + 1 (transformers' shift), the last on nothing.
        let want: Vec<i64> = (0..n)
            .map(|p| if p + 1 < n { labels[i][p + 1] } else { -100 })
            .collect();
        assert_eq!(b.labels.data(), want, "conversation {i}");
    }
    assert_eq!(data.skipped, 0);
    // Truncated to 24 tokens, a conversation whose assistant turn starts later teaches nothing:
    // it is left out and counted, not trained on as all −100.
    let len = 24;
    let teaching = labels
        .iter()
        .filter(|l| l[1..len.min(l.len())].iter().any(|&x| x >= 0))
        .count();
    assert!(
        (2..ids.len()).contains(&teaching),
        "the fixture has both kinds"
    );
    let short = Data::build(&config(len)).unwrap();
    assert_eq!(short.skipped, ids.len() - teaching);
    assert_eq!(short.train.len() + short.eval.len(), teaching);
}

#[test]
fn train_data_fine_tunes_chatglm3_with_lora_on_the_assistant_turns() {
    let mut t = Trainer::new(config(64)).unwrap();
    let first = t.eval_loss().unwrap();
    for _ in 0..6 {
        t.step().unwrap();
    }
    let last = t.eval_loss().unwrap();
    assert!(last < first, "held-out loss {first} → {last} did not fall");
}

fn error_for(lines: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "rewind-conv-{}-{}.jsonl",
        std::process::id(),
        lines.len()
    ));
    std::fs::write(&path, lines).unwrap();
    let e = read_conversations(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    e
}

#[test]
fn a_bad_line_is_an_error_naming_its_number_never_skipped() {
    let good = r#"{"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
    for (bad, says) in [
        ("{not json", "line 3: not JSON"),
        (r#"{"messages": []}"#, "line 3: no `conversations` list"),
        (
            r#"{"conversations": [{"role": "tool", "content": "x"}]}"#,
            r#"line 3: message 0: role Some("tool") is not system, user or assistant"#,
        ),
        (
            r#"{"conversations": [{"role": "user", "content": 5}]}"#,
            "line 3: message 0: `content` is not a string",
        ),
        (
            r#"{"conversations": [{"role": "user", "content": "hi"}]}"#,
            "line 3: no assistant message",
        ),
        (
            r#"{"tools": [{}], "conversations": []}"#,
            "line 3: `tools` is not supported",
        ),
    ] {
        // Line 2 is blank (allowed); line 3 is the bad one.
        let e = error_for(&format!("{good}\n\n{bad}\n{good}\n"));
        assert!(e.contains(says), "{bad}: {e}");
    }
    let path = std::env::temp_dir().join(format!("rewind-conv-ok-{}.jsonl", std::process::id()));
    std::fs::write(&path, format!("{good}\n\n{good}\n")).unwrap();
    assert_eq!(read_conversations(&path).unwrap().0.len(), 2);
    std::fs::remove_file(&path).ok();
}

#[test]
fn conversation_data_on_a_model_without_a_chat_format_is_refused() {
    let ckpt = Checkpoint::open(&fixtures().join("llama-tiny")).unwrap();
    let cfg = TrainConfig {
        model: Some(ckpt),
        ..config(64)
    };
    let e = Data::build(&cfg).unwrap_err().to_string();
    assert!(e.contains("needs ChatGLM3's tokenizer"), "{e}");
}

#[test]
fn train_data_on_the_command_line_fine_tunes_and_a_missing_file_is_a_usage_error() {
    let run = |data: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(["train", "--model"])
            .arg(fixtures().join("chatglm3-tiny"))
            .args([
                "--data",
                data,
                "--lora-rank",
                "4",
                "--steps",
                "2",
                "--quiet",
            ])
            .output()
            .unwrap()
    };
    let ok = run(fixtures()
        .join("conversations/train.jsonl")
        .to_str()
        .unwrap());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = run("/nonexistent/chat.jsonl");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--data"));
}

#[test]
fn train_data_fine_tunes_chatglm3_with_p_tuning_v2_under_non_reentrant_checkpointing() {
    let cfg = TrainConfig {
        lora_rank: 0,
        prefix_tokens: 8,
        prefix_projection: true,
        plan: rewind_lab::train::PlanChoice::Every,
        lr: 3e-2,
        ..config(64)
    };
    let mut t = Trainer::new(cfg).unwrap();
    // The prefix encoder alone trains: embedding, and the projection's two layers.
    assert_eq!(t.trainable_tensors(), 5);
    let first = t.eval_loss().unwrap();
    for _ in 0..6 {
        t.step().unwrap();
    }
    let last = t.eval_loss().unwrap();
    assert!(last < first, "held-out loss {first} → {last} did not fall");
    let out = std::env::temp_dir().join(format!("rewind-ptuned-{}", std::process::id()));
    t.model.save_adapter(&out).unwrap();
    let ckpt = Checkpoint::open(&fixtures().join("chatglm3-tiny")).unwrap();
    let mut back = ckpt.load(0, 0.0, &[]).unwrap();
    back.load_adapter(&out).unwrap();
    let named = |m: &dyn rewind_lab::models::CausalLm| -> Vec<(String, Vec<f32>)> {
        m.named_parameters()
            .into_iter()
            .filter(|(n, _)| n.contains("prefix_encoder"))
            .map(|(n, p)| (n, p.to_vec_f32()))
            .collect()
    };
    assert_eq!(named(back.as_ref()), named(t.model.as_ref()));
    std::fs::remove_dir_all(&out).ok();
}
