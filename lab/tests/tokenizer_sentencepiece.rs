//! SentencePiece `tokenizer.model` files as the `sentencepiece` library encodes and decodes
//! them: a BPE model with byte fallback, user-defined and control pieces (ChatGLM3's and Llama
//! 2's settings), a unigram model with byte fallback, and a unigram model whose unseen
//! characters are unknown — ids and decoded text equal to the library's on 100 corpus samples,
//! the hard strings and strings around the special pieces (`scripts/sentencepiece_fixture.py`,
//! sentencepiece 0.2.3). ChatGLM3's tokenizer adds its nine special tokens after the
//! vocabulary and `[gMASK] sop` before a text.

use rewind_lab::data::Tokenizer;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn check(name: &str) {
    let dir = fixtures().join("sentencepiece");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ids.json")).unwrap()).unwrap();
    let r = &record[name];
    let tok = Tokenizer::from_sentencepiece(
        &std::fs::read(dir.join(format!("{name}.model"))).unwrap(),
        "",
    )
    .unwrap();
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().unwrap());
    let texts = r["texts"].as_array().unwrap();
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(r["ids"][i].clone()).unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "{name}: ids of {text:?}");
        // No BOS without a tokenizer_config.json asking for one.
        assert_eq!(tok.encode_with_special_tokens(text).unwrap(), want);
        assert_eq!(
            tok.decode(&got),
            r["decoded"][i].as_str().unwrap(),
            "{name}: text of {text:?}"
        );
    }
    assert!(texts.len() > 120, "the corpus samples and the hard strings");
}

#[test]
fn a_bpe_model_with_byte_fallback_and_user_defined_pieces_encodes_like_sentencepiece() {
    check("bpe");
}

#[test]
fn a_unigram_model_with_byte_fallback_encodes_like_sentencepiece() {
    check("unigram");
}

#[test]
fn a_unigram_model_without_byte_fallback_gives_unknown_like_sentencepiece() {
    check("unigram_unk");
}

#[test]
fn chatglm3_tokenizer_puts_its_special_tokens_after_the_vocabulary_and_gmask_sop_first() {
    let tok = Tokenizer::from_dir(&fixtures().join("chatglm3-tiny")).unwrap();
    // SPTokenizer: special_tokens[i] = n_words + i, n_words = 500 pieces.
    for (i, t) in rewind_lab::data::tokenizer::CHATGLM_SPECIALS
        .iter()
        .enumerate()
    {
        assert_eq!(tok.special_id(t), Some(500 + i as u32), "{t}");
        assert!(tok.is_special(500 + i as u32));
    }
    assert_eq!(tok.vocab_size(), 509);
    let ids = tok.encode("Hello").unwrap();
    let with = tok.encode_with_special_tokens("Hello").unwrap();
    assert_eq!(with[..2], [501, 503], "[gMASK] sop");
    assert_eq!(with[2..], ids[..]);
    assert_eq!(tok.decode(&with), "[gMASK]sopHello");
    assert_eq!(tok.eos_id(), Some(2), "</s>");
}

/// A `ModelProto` of one unknown piece and a normalizer with precompiled rules.
fn proto_with_charsmap() -> Vec<u8> {
    let piece = [&[0x0a, 5][..], b"<unk>", &[0x18, 2]].concat(); // piece "<unk>", type UNKNOWN
    let normalizer = [&[0x0a, 8][..], b"nmt_nfkc", &[0x12, 3, 1, 2, 3]].concat();
    [
        &[0x0a, piece.len() as u8][..],
        &piece,
        &[0x1a, normalizer.len() as u8],
        &normalizer,
    ]
    .concat()
}

#[test]
fn what_the_sentencepiece_reader_does_not_do_is_an_error_naming_it() {
    let e = Tokenizer::from_sentencepiece(&proto_with_charsmap(), "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("normalizer `nmt_nfkc` with precompiled rules is not supported"),
        "{e}"
    );
    let e = Tokenizer::from_sentencepiece(b"\x0a\xff", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("malformed protobuf"), "{e}");
}
