//! `tokenizer.json` (byte-level BPE with GPT-2's pre-tokenizer) encodes to exactly the ids the
//! `tokenizers` library gave (0.23.3, `scripts/gpt2_fixture.py`): 100 samples of the shipped
//! corpus and hard strings (Unicode, emoji, whitespace runs, contractions, very long words, the
//! special token).

use rewind_lab::data::HfTokenizer;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gpt2-tiny")
        .join(name)
}

#[test]
fn ids_equal_the_tokenizers_librarys_on_the_corpus_and_hard_strings() {
    let tok = HfTokenizer::load(&fixture("tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), 500);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_ids.json")).unwrap())
            .unwrap();
    let texts = want["texts"].as_array().unwrap();
    let ids = want["ids"].as_array().unwrap();
    assert!(texts.len() > 110);
    let mut wrong = Vec::new();
    for (t, i) in texts.iter().zip(ids) {
        let t = t.as_str().unwrap();
        let want: Vec<u32> = i
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(t).unwrap();
        if got != want {
            wrong.push(format!("{t:?}:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        texts.len(),
        wrong.join("\n")
    );
}

#[test]
fn tokenizer_files_this_implementation_cannot_honour_are_refused_by_name() {
    let json = std::fs::read_to_string(fixture("tokenizer.json")).unwrap();
    let e = HfTokenizer::from_json(&json.replace("\"type\": \"BPE\"", "\"type\": \"WordPiece\""))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("model type \"WordPiece\" is not supported"),
        "{e}"
    );
    let e = HfTokenizer::from_json(
        &json.replace("\"add_prefix_space\": false", "\"add_prefix_space\": true"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("pre_tokenizer"), "{e}");
    assert!(HfTokenizer::from_json("{").is_err());
}
