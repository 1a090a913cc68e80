//! The project's one tokenizer: a `tokenizer.json` as the `tokenizers` library writes it,
//! encoding to exactly the library's ids. It is read from a model directory or trained on a
//! corpus (`bpe_trainer.rs`, the library's `BpeTrainer`, merge for merge). What it reads:
//!
//! - GPT-2: byte-level BPE, GPT-2's pre-tokenizer, added tokens;
//! - Qwen2: an NFC normalizer, a `Split` on Qwen2's pattern, byte-level without its own split;
//! - Llama 3: byte-level BPE with `ignore_merges`, its pattern, a post-processor adding
//!   `<|begin_of_text|>`;
//! - Llama 2 and Mistral (SentencePiece-style BPE): `▁` for spaces (a Prepend + Replace
//!   normalizer, or a Metaspace pre-tokenizer), `byte_fallback` to `<0xXX>` tokens, `fuse_unk`,
//!   a post-processor adding `<s>`.
//!
//! Encoding follows the library: the text is split at added tokens that are not normalized
//! (leftmost, longest), each other piece is normalized and split at the normalized added
//! tokens, pre-tokenized, and each pre-token encoded by the BPE model
//! (`bpe.rs`); [`Tokenizer::encode_with_special_tokens`] then adds the post-processor's tokens.
//! A component or option it does not implement is an error naming it.

mod bpe;
mod pattern;
mod pipeline;

use aho_corasick::{AhoCorasick, MatchKind};
use bpe::Bpe;
use pipeline::{Decoder, Normalizer, PreTokenizer, Template};
use rewind::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::invalid("tokenizer", msg)
}

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode`).
pub(super) fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let printable = |b: u32| {
        (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut n = 0;
    for b in 0..256u32 {
        out[b as usize] = if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("a code point below 512")
        };
    }
    out
}

/// GPT-2's pre-tokenizer: the splits of `text` by GPT-2's pattern, each ending where the
/// `tokenizers` library ends it.
pub(super) fn pre_tokenize(text: &str) -> impl Iterator<Item = Result<&str>> {
    static GPT2: OnceLock<pattern::Pattern> = OnceLock::new();
    GPT2.get_or_init(|| pattern::Pattern::new(pattern::GPT2).expect("GPT-2's pattern compiles"))
        .split(text)
        .into_iter()
        .map(Ok)
}

/// Added tokens, found in text before the model sees it.
#[derive(Debug, Clone)]
struct Added {
    /// (content, id), in the file's order.
    tokens: Vec<(String, u32)>,
    /// Which are matched in the raw text (`normalized: false`) and which after normalizing.
    raw: Option<(AhoCorasick, Vec<u32>)>,
    normalized: Option<(AhoCorasick, Vec<u32>)>,
    /// Ids of the `special` ones.
    special: Vec<u32>,
}

/// Splits `text` at the tokens `ac` finds (leftmost, longest): `Err(id)` for a token,
/// `Ok(offset, piece)` for the text between.
fn split_added<'t>(
    text: &'t str,
    set: &Option<(AhoCorasick, Vec<u32>)>,
) -> Vec<std::result::Result<(usize, &'t str), u32>> {
    let mut out = Vec::new();
    let mut done = 0;
    if let Some((ac, ids)) = set {
        for m in ac.find_iter(text) {
            if m.start() > done {
                out.push(Ok((done, &text[done..m.start()])));
            }
            out.push(Err(ids[m.pattern().as_usize()]));
            done = m.end();
        }
    }
    if done < text.len() || done == 0 {
        out.push(Ok((done, &text[done..])));
    }
    out
}

/// A BPE tokenizer in the `tokenizers` library's `tokenizer.json` format.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    model: Bpe,
    normalizer: Option<Normalizer>,
    pre: PreTokenizer,
    post: Template,
    decoder: Decoder,
    added: Added,
    /// The `tokenizer.json` text it was read from.
    source: String,
}

impl Tokenizer {
    /// Reads a `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("tokenizer", path, e))?;
        Tokenizer::from_json(&text)
    }

    /// Parses a `tokenizer.json`; a component or option this implementation does not do (a
    /// model other than BPE, a pre-tokenizer other than ByteLevel, Split, Metaspace, dropout,
    /// an added token that strips spaces, …) is an error naming it.
    pub fn from_json(text: &str) -> Result<Tokenizer> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("tokenizer.json: {e}")))?;
        let model = Bpe::parse(&v["model"])?;
        let normalizer = Normalizer::parse(&v["normalizer"])?;
        let pre = PreTokenizer::parse(&v["pre_tokenizer"])?;
        let post = Template::parse(&v["post_processor"])?;
        let decoder = Decoder::parse(&v["decoder"])?;
        let mut tokens = Vec::new();
        let (mut raw, mut norm, mut special) = (Vec::new(), Vec::new(), Vec::new());
        for t in v["added_tokens"].as_array().into_iter().flatten() {
            let (Some(content), Some(id)) = (t["content"].as_str(), t["id"].as_u64()) else {
                return Err(err(format!("tokenizer.json: added token {t} is malformed")));
            };
            let id = u32::try_from(id)
                .map_err(|_| err(format!("tokenizer.json: added token id {id} is too large")))?;
            for opt in ["single_word", "lstrip", "rstrip"] {
                if t[opt] == true {
                    return Err(err(format!(
                        "tokenizer.json: added token {content:?} with {opt} is not supported"
                    )));
                }
            }
            if content.is_empty() {
                continue;
            }
            tokens.push((content.to_string(), id));
            if t["special"] == true {
                special.push(id);
            }
            // The library's default: special tokens are not normalized, others are.
            let normalized = t["normalized"].as_bool().unwrap_or(t["special"] != true);
            if normalized { &mut norm } else { &mut raw }.push((content.to_string(), id));
        }
        let automaton = |set: Vec<(String, u32)>| -> Result<Option<(AhoCorasick, Vec<u32>)>> {
            if set.is_empty() {
                return Ok(None);
            }
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(set.iter().map(|(c, _)| c))
                .map_err(|e| err(format!("tokenizer.json: added tokens: {e}")))?;
            Ok(Some((ac, set.into_iter().map(|(_, id)| id).collect())))
        };
        Ok(Tokenizer {
            model,
            normalizer,
            pre,
            post,
            decoder,
            added: Added {
                tokens,
                raw: automaton(raw)?,
                normalized: automaton(norm)?,
                special,
            },
            source: text.to_string(),
        })
    }

    /// FNV-1a of the `tokenizer.json` it was read from.
    pub fn content_hash(&self) -> u64 {
        super::Fnv1a::of(self.source.as_bytes())
    }

    /// The `tokenizer.json` text: the file it was read from, byte for byte, or for a trained
    /// tokenizer what the `tokenizers` library writes for the same training.
    pub fn to_json(&self) -> &str {
        &self.source
    }

    /// The text of `ids` as the library's `decode(ids, skip_special_tokens=False)`: each id's
    /// token through the decoder (unknown ids are skipped; invalid UTF-8 is replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let token_of: HashMap<u32, &str> = self
            .model
            .vocab
            .iter()
            .map(|(t, &i)| (i, t.as_str()))
            .chain(self.added.tokens.iter().map(|(t, i)| (*i, t.as_str())))
            .collect();
        let tokens = ids
            .iter()
            .filter_map(|id| token_of.get(id).map(|t| t.to_string()))
            .collect();
        self.decoder.decode(tokens)
    }

    /// Number of ids (the vocabulary and the added tokens).
    pub fn vocab_size(&self) -> usize {
        let top = self
            .model
            .vocab
            .values()
            .chain(self.added.tokens.iter().map(|(_, id)| id))
            .max()
            .map_or(0, |&m| m as usize + 1);
        top.max(self.model.vocab.len())
    }

    /// Whether `id` is one of the added tokens marked special.
    pub fn is_special(&self, id: u32) -> bool {
        self.added.special.contains(&id)
    }

    /// The ids of `text` as the library's `encode(text, add_special_tokens=False)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut ranks = Vec::new();
        for part in split_added(text, &self.added.raw) {
            let (offset, piece) = match part {
                Err(id) => {
                    out.push(id);
                    continue;
                }
                Ok(p) => p,
            };
            let normalized = match &self.normalizer {
                Some(n) => std::borrow::Cow::Owned(n.apply(piece)),
                None => std::borrow::Cow::Borrowed(piece),
            };
            for sub in split_added(&normalized, &self.added.normalized) {
                match sub {
                    Err(id) => out.push(id),
                    // The library drops empty pieces before pre-tokenizing.
                    Ok((_, "")) => {}
                    Ok((at, text)) => {
                        let byte_level = self.pre.byte_level;
                        self.pre.for_each(text, offset == 0 && at == 0, &mut |p| {
                            self.model.encode(p, byte_level, &mut out, &mut ranks)
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The ids of `text` as the library's `encode(text)`: with the post-processor's special
    /// tokens (a BOS for Llama), as `train` and `eval` read text.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        let mut out =
            Vec::with_capacity(ids.len() + self.post.before.len() + self.post.after.len());
        out.extend_from_slice(&self.post.before);
        out.extend(ids);
        out.extend_from_slice(&self.post.after);
        Ok(out)
    }
}
