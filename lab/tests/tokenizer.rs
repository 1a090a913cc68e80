//! The one tokenizer against the `tokenizers` library (0.23.3, `scripts/gpt2_fixture.py`):
//! trained on the shipped corpus it writes the library's `tokenizer.json` byte for byte, and a
//! `tokenizer.json` encodes to exactly the library's ids on 100 corpus samples and hard strings
//! (Unicode, emoji, whitespace runs, contractions, very long words, the special token).

use rewind_lab::data::{CorpusConfig, Tokenizer, synthetic_corpus};
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gpt2-tiny")
        .join(name)
}

#[test]
fn ids_equal_the_tokenizers_librarys_on_the_corpus_and_hard_strings() {
    let tok = Tokenizer::load(&fixture("tokenizer.json")).unwrap();
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
    let e = Tokenizer::from_json(&json.replace("\"type\": \"BPE\"", "\"type\": \"WordPiece\""))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("model type \"WordPiece\" is not supported"),
        "{e}"
    );
    // Each unsupported component, set into the file, is refused by its name.
    let base: serde_json::Value = serde_json::from_str(&json).unwrap();
    for (key, value, named) in [
        (
            "pre_tokenizer",
            r#"{"type": "Whitespace"}"#,
            r#"pre_tokenizer "Whitespace""#,
        ),
        (
            "normalizer",
            r#"{"type": "BertNormalizer"}"#,
            r#"normalizer "BertNormalizer""#,
        ),
        (
            "post_processor",
            r#"{"type": "RobertaProcessing"}"#,
            r#"post_processor "RobertaProcessing""#,
        ),
        (
            "decoder",
            r#"{"type": "WordPiece"}"#,
            r#"decoder "WordPiece""#,
        ),
    ] {
        let mut v = base.clone();
        v[key] = serde_json::from_str(value).unwrap();
        let e = Tokenizer::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains(named) && e.contains("is not supported"), "{e}");
    }
    let mut v = base.clone();
    v["model"]["dropout"] = 0.1.into();
    let e = Tokenizer::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.dropout is not supported"), "{e}");
    let mut v = base.clone();
    v["added_tokens"][0]["lstrip"] = true.into();
    let e = Tokenizer::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("with lstrip is not supported"), "{e}");
    let mut v = base;
    v["pre_tokenizer"] = serde_json::json!({
        "type": "Split", "pattern": {"Regex": "a(?=b)"}, "behavior": "Isolated", "invert": false
    });
    let e = Tokenizer::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("look-around \"(?=\""), "{e}");
    assert!(Tokenizer::from_json("{").is_err());
}

/// The corpus as `tokenizers` saw it: `Tokenizer.train([file])` feeds a file line by line, each
/// line with its `\n`; the file is `--example corpus`'s output (samples joined by blank lines).
fn corpus_lines() -> Vec<String> {
    let cfg = rewind_lab::train::TrainConfig::default();
    let file = synthetic_corpus(cfg.corpus).join("\n\n") + "\n";
    file.split_inclusive('\n').map(str::to_string).collect()
}

/// Panics with the first differing line when `got` is not `want`.
fn assert_same_json(got: &str, want: &str, what: &str) {
    if got != want {
        let line = got.lines().zip(want.lines()).position(|(a, b)| a != b);
        panic!(
            "{what}: tokenizer.json differs from the library's at line {line:?}: got {:?}, want {:?} ({} vs {} bytes)",
            line.and_then(|l| got.lines().nth(l)),
            line.and_then(|l| want.lines().nth(l)),
            got.len(),
            want.len()
        );
    }
}

#[test]
fn training_on_the_corpus_writes_the_tokenizers_librarys_tokenizer_json_byte_for_byte() {
    let want = std::fs::read_to_string(fixture("tokenizer.json")).unwrap();
    let tok = Tokenizer::train(&corpus_lines(), 500).unwrap();
    assert_same_json(tok.to_json(), &want, "shipped corpus, 500 ids");
    assert_eq!(tok.vocab_size(), 500);
}

/// `scripts/bpe_training_fixture.py`: texts with ties, overlapping pairs ("aaaa"), multi-byte
/// UTF-8 and whitespace runs, trained to 420 ids and to 5000 (the pairs run out at 540).
#[test]
fn training_on_hard_texts_matches_the_library_at_a_size_and_when_pairs_run_out() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bpe-train");
    let texts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("texts.json")).unwrap()).unwrap();
    let texts: Vec<&str> = texts["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for size in [420, 5000] {
        let want = std::fs::read_to_string(dir.join(format!("tokenizer-{size}.json"))).unwrap();
        let tok = Tokenizer::train(&texts, size).unwrap();
        assert_same_json(tok.to_json(), &want, &format!("{size} ids"));
    }
}

#[test]
fn training_is_deterministic_round_trips_and_compresses() {
    let texts = synthetic_corpus(CorpusConfig {
        samples: 600,
        ..CorpusConfig::default()
    });
    let tok = Tokenizer::train(&texts, 512).unwrap();
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(
        tok.to_json(),
        Tokenizer::train(&texts, 512).unwrap().to_json(),
        "same texts, same tokenizer"
    );
    for t in texts.iter().take(200) {
        assert_eq!(tok.decode(&tok.encode(t).unwrap()), *t);
    }
    // Text it never saw, multi-byte UTF-8 and odd spacing included.
    for t in [
        "héllo wörld  ✓ 123",
        "  leading spaces",
        "",
        "x",
        "日本語のテキスト",
    ] {
        assert_eq!(tok.decode(&tok.encode(t).unwrap()), t);
    }
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let tokens: usize = texts.iter().map(|t| tok.encode(t).unwrap().len()).sum();
    // Measured: 51017 bytes → 18643 tokens (2.74 bytes a token).
    assert!(
        tokens * 5 < bytes * 2,
        "BPE compresses the corpus 2.5× or more: {bytes} bytes → {tokens} tokens"
    );
    let ids = tok.encode("let k3 = 17 ;").unwrap();
    assert!(!ids.contains(&rewind_lab::data::PAD), "{ids:?}");
    assert_eq!(
        tok.encode("<|endoftext|>").unwrap(),
        [rewind_lab::data::PAD]
    );
}
