//! `rewind generate`: greedy continuations through the key/value cache equal transformers'
//! `generate(do_sample=False)` on every family fixture (GPT-2, Llama, Qwen2, GLM, ChatGLM3 plain
//! and as a chat turn; `scripts/generate_fixture.py`), stopping where the checkpoint's
//! generation config says; sampling is seeded and a vanishing nucleus is greedy.

use rewind_lab::data::Tokenizer;
use rewind_lab::generate::{Choice, continue_ids, prompt_ids, stop_ids};
use rewind_lab::models::lm::Checkpoint;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn greedy_continuations_equal_transformers_on_every_family() {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("generate.json")).unwrap()).unwrap();
    let max_new = record["max_new_tokens"].as_u64().unwrap() as usize;
    let runs = record["runs"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        18,
        "5 families × 3 prompts, ChatGLM3 also as a chat turn"
    );
    for r in runs {
        let name = r["model"].as_str().unwrap();
        let (prompt, chat) = (r["prompt"].as_str().unwrap(), r["chat"].as_bool().unwrap());
        let ckpt = Checkpoint::open(&fixtures().join(name)).unwrap();
        let model = ckpt.load(0, 0.0, &[]).unwrap();
        let tok = Tokenizer::from_dir(&ckpt.dir).unwrap();
        let ids = prompt_ids(&tok, prompt, chat).unwrap();
        let want: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want, "{name} {prompt:?} chat {chat}: prompt ids");
        let stop = stop_ids(&ckpt).unwrap();
        let (new, _) = continue_ids(model.as_ref(), &ids, max_new, &stop, Choice::Greedy).unwrap();
        let want: Vec<u32> = serde_json::from_value(r["new_ids"].clone()).unwrap();
        assert_eq!(new, want, "{name} {prompt:?} chat {chat}: new ids");
    }
}

#[test]
fn chatglm3_stops_at_its_turn_ending_tokens_and_other_models_have_no_chat_format() {
    let ckpt = Checkpoint::open(&fixtures().join("chatglm3-tiny")).unwrap();
    // generation_config.json: </s>, <|user|>, <|observation|>.
    assert_eq!(stop_ids(&ckpt).unwrap(), [2, 506, 508]);
    let llama = Tokenizer::from_dir(&fixtures().join("llama-tiny")).unwrap();
    let e = prompt_ids(&llama, "Hi", true).unwrap_err().to_string();
    assert!(e.contains("--chat needs a chat format rewind knows"), "{e}");
}

#[test]
fn sampling_is_seeded_and_a_vanishing_nucleus_is_greedy() {
    let ckpt = Checkpoint::open(&fixtures().join("llama-tiny")).unwrap();
    let model = ckpt.load(0, 0.0, &[]).unwrap();
    let prompt = [1u32, 40, 69, 76];
    let run = |choice| {
        continue_ids(model.as_ref(), &prompt, 16, &[], choice)
            .unwrap()
            .0
    };
    let sample = |seed| Choice::Sample {
        temperature: 1.5,
        top_p: 1.0,
        seed,
    };
    assert_eq!(run(sample(7)), run(sample(7)), "same seed, same tokens");
    assert_ne!(run(sample(7)), run(sample(8)), "another seed, other tokens");
    let nucleus = Choice::Sample {
        temperature: 1.0,
        top_p: 1e-9,
        seed: 3,
    };
    assert_eq!(
        run(nucleus),
        run(Choice::Greedy),
        "top_p → 0 keeps the top token only"
    );
}

#[test]
fn generate_on_the_command_line_answers_a_chat_turn_with_a_json_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["generate", "--model"])
        .arg(fixtures().join("chatglm3-tiny"))
        .args([
            "--prompt",
            "Hello",
            "--chat",
            "--max-new-tokens",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["prompt_ids"][0], 501, "[gMASK] first");
    assert!(json["new_ids"].as_array().unwrap().len() <= 5);
}
