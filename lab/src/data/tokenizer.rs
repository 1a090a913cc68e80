//! The project's one tokenizer: a `tokenizer.json` as the `tokenizers` library writes it for
//! GPT-2 — byte-level BPE with GPT-2's pre-tokenizer and its added (special) tokens — encoding to
//! exactly the library's ids. It is read from a model directory or trained on a corpus
//! (`bpe_trainer.rs`, the library's `BpeTrainer`, merge for merge).
//!
//! Encoding: the text is split at added tokens (matched as written, longest first); each
//! remaining piece is split by GPT-2's pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, each split's
//! UTF-8 bytes are mapped to GPT-2's printable byte characters, and BPE merges the adjacent
//! pair of lowest rank until none applies.

use regex::Regex;
use rewind::error::{Error, Result};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::OnceLock;

fn err(msg: impl Into<String>) -> Error {
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
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    // `\s+(?!\S)` needs look-ahead, which `regex` lacks: it is applied below.
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(r"^(?:'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+)")
            .expect("GPT-2's pattern compiles")
    });
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= text.len() {
            return None;
        }
        let Some(m) = pattern.find(&text[i..]) else {
            let at = i;
            i = text.len();
            return Some(Err(err(format!("no split matches at byte {at}"))));
        };
        let mut piece = m.as_str();
        // `\s+(?!\S)`: a run of two or more spaces before a non-space leaves its last one to
        // the next split.
        if piece.chars().all(char::is_whitespace) && i + piece.len() < text.len() {
            let mut chars = piece.char_indices();
            if let (Some(_), Some((last, _))) = (chars.nth(1), piece.char_indices().last()) {
                piece = &piece[..last];
            }
        }
        i += piece.len();
        Some(Ok(piece))
    })
}

/// A byte-level BPE tokenizer in the `tokenizers` library's `tokenizer.json` format.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    /// `(left id, right id)` packed in a u64 → (rank, merged id).
    merges: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
    /// The id of each byte's character, `u32::MAX` where the vocabulary lacks it.
    byte_ids: [u32; 256],
    added: Vec<(String, u32)>,
    bytes: [char; 256],
    /// The `tokenizer.json` text it was read from.
    source: String,
}

impl Tokenizer {
    /// Reads a `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("tokenizer", path, e))?;
        Tokenizer::from_json(&text)
    }

    /// Parses a `tokenizer.json`; what this implementation does not do (another model, a
    /// normalizer, another pre-tokenizer, dropout, merges suffixes) is an error naming it.
    pub fn from_json(text: &str) -> Result<Tokenizer> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("tokenizer.json: {e}")))?;
        let model = &v["model"];
        if model["type"] != "BPE" {
            return Err(err(format!(
                "tokenizer.json: model type {} is not supported (only BPE)",
                model["type"]
            )));
        }
        if !v["normalizer"].is_null() {
            return Err(err("tokenizer.json: normalizers are not supported"));
        }
        let pre = &v["pre_tokenizer"];
        if pre["type"] != "ByteLevel"
            || pre["add_prefix_space"] != false
            || pre["use_regex"] == false
        {
            return Err(err(format!(
                "tokenizer.json: pre_tokenizer {pre} is not supported (ByteLevel, add_prefix_space false, use_regex true)"
            )));
        }
        for key in ["dropout", "continuing_subword_prefix", "end_of_word_suffix"] {
            if !model[key].is_null() {
                return Err(err(format!("tokenizer.json: model.{key} is not supported")));
            }
        }
        if model["ignore_merges"] == true || model["byte_fallback"] == true {
            return Err(err(
                "tokenizer.json: ignore_merges and byte_fallback are not supported",
            ));
        }
        let vocab: HashMap<String, u32> = model["vocab"]
            .as_object()
            .ok_or_else(|| err("tokenizer.json: model.vocab is not an object"))?
            .iter()
            .map(|(k, id)| {
                id.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .map(|i| (k.clone(), i))
                    .ok_or_else(|| err(format!("tokenizer.json: the id of {k:?} is not a number")))
            })
            .collect::<Result<_>>()?;
        let merges = model["merges"]
            .as_array()
            .ok_or_else(|| err("tokenizer.json: model.merges is not a list"))?;
        let id_of = |t: &str, rank: usize| {
            vocab.get(t).copied().ok_or_else(|| {
                err(format!(
                    "tokenizer.json: merge {rank} uses or makes {t:?}, which the vocabulary lacks"
                ))
            })
        };
        let mut ranks: HashMap<u64, (u32, u32), _> = HashMap::default();
        ranks.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let pair = match m {
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(a) if a.len() == 2 => a[0]
                    .as_str()
                    .zip(a[1].as_str())
                    .map(|(x, y)| (x.to_string(), y.to_string())),
                _ => None,
            }
            .ok_or_else(|| err(format!("tokenizer.json: merge {rank} is malformed: {m}")))?;
            let (a, b) = (id_of(&pair.0, rank)?, id_of(&pair.1, rank)?);
            let merged = id_of(&format!("{}{}", pair.0, pair.1), rank)?;
            ranks.entry(pack(a, b)).or_insert((rank as u32, merged));
        }
        let bytes = byte_chars();
        let byte_ids = bytes.map(|c| vocab.get(&c.to_string()).copied().unwrap_or(u32::MAX));
        let mut added: Vec<(String, u32)> = v["added_tokens"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| {
                        Some((t["content"].as_str()?.to_string(), t["id"].as_u64()? as u32))
                    })
                    .collect()
            })
            .unwrap_or_default();
        added.sort_by_key(|a| std::cmp::Reverse(a.0.len()));
        Ok(Tokenizer {
            vocab,
            merges: ranks,
            byte_ids,
            added,
            bytes,
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

    /// The text of `ids` (unknown ids are skipped; invalid UTF-8 is replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let token_of: HashMap<u32, &str> = self
            .vocab
            .iter()
            .map(|(t, &i)| (i, t.as_str()))
            .chain(self.added.iter().map(|(t, i)| (*i, t.as_str())))
            .collect();
        let byte_of: HashMap<char, u8> = self
            .bytes
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let Some(tok) = token_of.get(id) else {
                continue;
            };
            if self.added.iter().any(|(t, i)| i == id && t == tok) {
                out.extend_from_slice(tok.as_bytes());
            } else {
                out.extend(tok.chars().filter_map(|c| byte_of.get(&c)));
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Number of ids (the vocabulary and the added tokens).
    pub fn vocab_size(&self) -> usize {
        let top = self
            .vocab
            .values()
            .chain(self.added.iter().map(|(_, id)| id))
            .max()
            .map_or(0, |&m| m as usize + 1);
        top.max(self.vocab.len())
    }

    /// The ids of `text`, as the `tokenizers` library encodes it (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest added token (longest at the same place) splits the text.
            let next = self
                .added
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
                .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let (plain, special) = match next {
                Some((at, len, id)) => (&rest[..at], Some((len, id, at))),
                None => (rest, None),
            };
            self.encode_plain(plain, &mut out)?;
            match special {
                Some((len, id, at)) => {
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// GPT-2's pre-tokenizer, then BPE on each split.
    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        for piece in pre_tokenize(text) {
            self.bpe(piece?, out)?;
        }
        Ok(())
    }

    /// BPE on one split, appended to `out`: the adjacent pair of lowest rank merges (every
    /// occurrence, left to right) until no pair has a merge.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) -> Result<()> {
        let start = out.len();
        for b in piece.bytes() {
            match self.byte_ids[b as usize] {
                u32::MAX => {
                    let c = self.bytes[b as usize];
                    return Err(err(format!("the vocabulary has no token {c:?}")));
                }
                id => out.push(id),
            }
        }
        loop {
            let best = out[start..]
                .windows(2)
                .filter_map(|w| {
                    let key = pack(w[0], w[1]);
                    self.merges.get(&key).map(|&(rank, id)| (rank, key, id))
                })
                .min();
            let Some((_, key, id)) = best else {
                return Ok(());
            };
            let (mut read, mut write) = (start, start);
            while read < out.len() {
                if read + 1 < out.len() && pack(out[read], out[read + 1]) == key {
                    out[write] = id;
                    read += 2;
                } else {
                    out[write] = out[read];
                    read += 1;
                }
                write += 1;
            }
            out.truncate(write);
        }
    }
}

fn pack(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

/// A multiplicative hash for packed id pairs: the merge lookup is the encoder's inner loop, and
/// the keys are not chosen by an adversary who could make them collide.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ x >> 29).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
