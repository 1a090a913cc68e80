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
//!
//! A model directory without `tokenizer.json` may ship SentencePiece's `tokenizer.model`
//! (ChatGLM3, original Llama 2): read and encoded as the `sentencepiece` library does
//! (`sentencepiece.rs`), with the special tokens its tokenizer code adds (ChatGLM3's).

mod bpe;
mod pattern;
mod pipeline;
mod sentencepiece;

use aho_corasick::{AhoCorasick, MatchKind};
use bpe::Bpe;
use pipeline::{Decoder, Normalizer, PreTokenizer, Template};
use rewind::error::{Error, Result};
use sentencepiece::SentencePiece;
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

/// What a `tokenizer.json` holds, run as the `tokenizers` library runs it.
#[derive(Debug, Clone)]
struct Library {
    model: Bpe,
    normalizer: Option<Normalizer>,
    pre: PreTokenizer,
    post: Template,
    decoder: Decoder,
    added: Added,
}

/// A SentencePiece model with the special tokens its model's tokenizer code adds after the
/// vocabulary (ChatGLM3's `[gMASK]`, `sop`, roles, …) and the ids it puts before a text.
#[derive(Debug, Clone)]
struct Spm {
    model: SentencePiece,
    /// (text, id) of the tokens after the vocabulary.
    specials: Vec<(String, u32)>,
    /// Ids before every encoded text (`encode_with_special_tokens`).
    prefix: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Kind {
    Library(Box<Library>),
    SentencePiece(Box<Spm>),
}

/// The model's tokenizer: a `tokenizer.json` (the `tokenizers` library) or a SentencePiece
/// `tokenizer.model` (the `sentencepiece` library).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    kind: Kind,
    /// The `tokenizer.json` text it was read from (empty for a SentencePiece model).
    source: String,
    /// FNV-1a of the files it was read from.
    hash: u64,
}

/// ChatGLM3's special tokens, in id order after the SentencePiece vocabulary
/// (`SPTokenizer.special_tokens`).
pub const CHATGLM_SPECIALS: [&str; 9] = [
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
];

impl Tokenizer {
    /// Reads a `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("tokenizer", path, e))?;
        Tokenizer::from_json(&text)
    }

    /// The tokenizer of a model directory: its `tokenizer.json`, else its SentencePiece
    /// `tokenizer.model` with what `tokenizer_config.json` says of it (ChatGLM3's
    /// `ChatGLMTokenizer`: its special tokens and the `[gMASK] sop` prefix; others:
    /// `add_bos_token`, `add_eos_token`).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let json = dir.join("tokenizer.json");
        if json.exists() {
            return Tokenizer::load(&json);
        }
        let model = dir.join("tokenizer.model");
        if !model.exists() {
            return Err(err(format!(
                "{} has neither tokenizer.json nor tokenizer.model",
                dir.display()
            )));
        }
        let bytes = std::fs::read(&model).map_err(|e| Error::io("tokenizer", &model, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = match config_path.exists() {
            true => std::fs::read_to_string(&config_path)
                .map_err(|e| Error::io("tokenizer", &config_path, e))?,
            false => String::new(),
        };
        Tokenizer::from_sentencepiece(&bytes, &config)
    }

    /// A SentencePiece model's bytes with the `tokenizer_config.json` text beside it (may be
    /// empty).
    pub fn from_sentencepiece(model: &[u8], tokenizer_config: &str) -> Result<Tokenizer> {
        let sp = SentencePiece::parse(model)?;
        let config: serde_json::Value = match tokenizer_config.trim() {
            "" => serde_json::Value::Null,
            t => serde_json::from_str(t).map_err(|e| err(format!("tokenizer_config.json: {e}")))?,
        };
        let n = u32::try_from(sp.pieces.len()).map_err(|_| err("tokenizer.model: too large"))?;
        let (specials, prefix, suffix) = if config["tokenizer_class"] == "ChatGLMTokenizer" {
            let specials: Vec<(String, u32)> = CHATGLM_SPECIALS
                .iter()
                .zip(n..)
                .map(|(t, id)| (t.to_string(), id))
                .collect();
            (specials, vec![n + 1, n + 3], vec![])
        } else {
            let flag = |k: &str, default: bool| config[k].as_bool().unwrap_or(default);
            let bos = sp.bos_id.filter(|_| flag("add_bos_token", false));
            let eos = sp.eos_id.filter(|_| flag("add_eos_token", false));
            (
                Vec::new(),
                bos.into_iter().collect(),
                eos.into_iter().collect(),
            )
        };
        if !suffix.is_empty() {
            return Err(err("tokenizer_config.json: add_eos_token is not supported"));
        }
        let mut h = super::Fnv1a::of(model);
        h ^= super::Fnv1a::of(tokenizer_config.as_bytes()).rotate_left(1);
        Ok(Tokenizer {
            kind: Kind::SentencePiece(Box::new(Spm {
                model: sp,
                specials,
                prefix,
            })),
            source: String::new(),
            hash: h,
        })
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
            kind: Kind::Library(Box::new(Library {
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
            })),
            source: text.to_string(),
            hash: super::Fnv1a::of(text.as_bytes()),
        })
    }

    /// FNV-1a of the files it was read from.
    pub fn content_hash(&self) -> u64 {
        self.hash
    }

    /// The `tokenizer.json` text: the file it was read from, byte for byte, or for a trained
    /// tokenizer what the `tokenizers` library writes for the same training (empty for a
    /// SentencePiece model).
    pub fn to_json(&self) -> &str {
        &self.source
    }

    /// The id of a special token by its text (`[gMASK]`, `<|user|>`, `</s>`, …).
    pub fn special_id(&self, text: &str) -> Option<u32> {
        match &self.kind {
            Kind::Library(l) => l.added.tokens.iter().find(|(t, _)| t == text).map(|t| t.1),
            Kind::SentencePiece(s) => s
                .specials
                .iter()
                .find(|(t, _)| t == text)
                .map(|t| t.1)
                .or_else(|| {
                    let id = s.model.piece_to_id(text);
                    (s.model.pieces[id as usize].text == text).then_some(id)
                }),
        }
    }

    /// The end-of-sequence id, where the tokenizer has one.
    pub fn eos_id(&self) -> Option<u32> {
        match &self.kind {
            Kind::Library(_) => None,
            Kind::SentencePiece(s) => s.model.eos_id,
        }
    }

    /// The text of `ids` as the library's `decode(ids, skip_special_tokens=False)`: each id's
    /// token through the decoder (unknown ids are skipped; invalid UTF-8 is replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let l = match &self.kind {
            Kind::Library(l) => l,
            Kind::SentencePiece(s) => {
                // Special tokens after the vocabulary decode to their text, as ChatGLM3's
                // tokenizer gives them.
                let mut out = String::new();
                let mut run = Vec::new();
                for &id in ids {
                    match s.specials.iter().find(|(_, i)| *i == id) {
                        Some((t, _)) => {
                            out.push_str(&s.model.decode(&run));
                            run.clear();
                            out.push_str(t);
                        }
                        None => run.push(id),
                    }
                }
                out.push_str(&s.model.decode(&run));
                return out;
            }
        };
        let token_of: HashMap<u32, &str> = l
            .model
            .vocab
            .iter()
            .map(|(t, &i)| (i, t.as_str()))
            .chain(l.added.tokens.iter().map(|(t, i)| (*i, t.as_str())))
            .collect();
        let tokens = ids
            .iter()
            .filter_map(|id| token_of.get(id).map(|t| t.to_string()))
            .collect();
        l.decoder.decode(tokens)
    }

    /// Number of ids (the vocabulary and the added or special tokens).
    pub fn vocab_size(&self) -> usize {
        let l = match &self.kind {
            Kind::Library(l) => l,
            Kind::SentencePiece(s) => return s.model.pieces.len() + s.specials.len(),
        };
        let top = l
            .model
            .vocab
            .values()
            .chain(l.added.tokens.iter().map(|(_, id)| id))
            .max()
            .map_or(0, |&m| m as usize + 1);
        top.max(l.model.vocab.len())
    }

    /// Whether `id` is one of the added tokens marked special (a SentencePiece model's control
    /// pieces and the tokens after its vocabulary).
    pub fn is_special(&self, id: u32) -> bool {
        match &self.kind {
            Kind::Library(l) => l.added.special.contains(&id),
            Kind::SentencePiece(s) => {
                s.specials.iter().any(|(_, i)| *i == id)
                    || s.model
                        .pieces
                        .get(id as usize)
                        .is_some_and(|p| p.kind == sentencepiece::PieceType::Control)
            }
        }
    }

    /// The ids of `text` as the library's `encode(text, add_special_tokens=False)`
    /// (SentencePiece: `encode(text)`, special tokens' text encoded as text, as ChatGLM3's
    /// tokenizer does by default).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let l = match &self.kind {
            Kind::Library(l) => l,
            Kind::SentencePiece(s) => {
                let mut out = Vec::new();
                s.model.encode(text, &mut out);
                return Ok(out);
            }
        };
        let mut out = Vec::new();
        let mut ranks = Vec::new();
        for part in split_added(text, &l.added.raw) {
            let (offset, piece) = match part {
                Err(id) => {
                    out.push(id);
                    continue;
                }
                Ok(p) => p,
            };
            let normalized = match &l.normalizer {
                Some(n) => std::borrow::Cow::Owned(n.apply(piece)),
                None => std::borrow::Cow::Borrowed(piece),
            };
            for sub in split_added(&normalized, &l.added.normalized) {
                match sub {
                    Err(id) => out.push(id),
                    // The library drops empty pieces before pre-tokenizing.
                    Ok((_, "")) => {}
                    Ok((at, text)) => {
                        let byte_level = l.pre.byte_level;
                        l.pre.for_each(text, offset == 0 && at == 0, &mut |p| {
                            l.model.encode(p, byte_level, &mut out, &mut ranks)
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The ids of `text` as the library's `encode(text)`: with the post-processor's special
    /// tokens (a BOS for Llama; ChatGLM3's `[gMASK] sop`), as `train` and `eval` read text.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        let (before, after): (&[u32], &[u32]) = match &self.kind {
            Kind::Library(l) => (&l.post.before, &l.post.after),
            Kind::SentencePiece(s) => (&s.prefix, &[]),
        };
        let mut out = Vec::with_capacity(ids.len() + before.len() + after.len());
        out.extend_from_slice(before);
        out.extend(ids);
        out.extend_from_slice(after);
        Ok(out)
    }
}
