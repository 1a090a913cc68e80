//! The tokenizers of today's model families against the `tokenizers` library (0.23.3,
//! `scripts/tokenizer_fixture.py`): Qwen2's (NFC, a Split on its pattern, byte-level), Llama 3's
//! (byte-level with `ignore_merges`, its pattern, a BOS post-processor) and SentencePiece-style
//! BPE as Llama 2 (Prepend + Replace normalizer) and newer conversions (Metaspace) write it
//! (`byte_fallback`, `fuse_unk`, `<s>` added). On 100 corpus samples, hard strings (Unicode,
//! emoji, whitespace and newline runs, contractions in both cases, characters no vocabulary
//! holds) and strings around each kind's special tokens, the ids equal the library's
//! `encode(text).ids` and `encode(text, add_special_tokens=False).ids`, and decoding gives the
//! library's `decode(ids, skip_special_tokens=False)`.

use rewind_lab::data::Tokenizer;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tokenizers")
        .join(name)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check(kind: &str) {
    let tok = Tokenizer::load(&fixture(&format!("{kind}.json"))).unwrap();
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("ids.json")).unwrap()).unwrap();
    let want = &all[kind];
    assert_eq!(
        tok.vocab_size() as u64,
        want["vocab_size"].as_u64().unwrap()
    );
    let texts = want["texts"].as_array().unwrap();
    assert!(texts.len() > 120, "{kind}: {} texts", texts.len());
    let mut wrong = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let t = t.as_str().unwrap();
        let (with, plain) = (ids(&want["ids"][i]), ids(&want["plain"][i]));
        let got_plain = tok.encode(t).unwrap();
        if got_plain != plain {
            wrong.push(format!(
                "plain {t:?}:\n  got  {got_plain:?}\n  want {plain:?}"
            ));
        }
        let got = tok.encode_with_special_tokens(t).unwrap();
        if got != with {
            wrong.push(format!(
                "with specials {t:?}:\n  got  {got:?}\n  want {with:?}"
            ));
        }
        let decoded = tok.decode(&plain);
        if decoded != want["decoded"][i].as_str().unwrap() {
            wrong.push(format!(
                "decode {t:?}: got {decoded:?}, want {:?}",
                want["decoded"][i]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{kind}: {} differences:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn qwen2s_nfc_split_byte_level_tokenizer_gives_the_librarys_ids() {
    check("qwen2");
}

#[test]
fn llama3s_byte_level_tokenizer_with_ignore_merges_and_a_bos_gives_the_librarys_ids() {
    check("llama3");
}

#[test]
fn llama2s_sentencepiece_bpe_with_byte_fallback_gives_the_librarys_ids() {
    check("llama2");
}

#[test]
fn a_metaspace_sentencepiece_bpe_gives_the_librarys_ids() {
    check("metaspace");
}
