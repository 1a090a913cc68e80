//! A `tokenizer.json` as the `tokenizers` library writes it for GPT-2: byte-level BPE with
//! GPT-2's pre-tokenizer and its added (special) tokens, encoding to exactly the library's ids.
//!
//! Encoding: the text is split at added tokens (matched as written, longest first); each
//! remaining piece is split by GPT-2's pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, each split's
//! UTF-8 bytes are mapped to GPT-2's printable byte characters, and BPE merges the adjacent
//! pair of lowest rank until none applies.

use regex::Regex;
use rewind::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("tokenizer", msg)
}

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode`).
fn byte_chars() -> [char; 256] {
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

/// A byte-level BPE tokenizer read from `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    added: Vec<(String, u32)>,
    bytes: [char; 256],
    pattern: Regex,
    /// FNV-1a of the `tokenizer.json` text.
    source_hash: u64,
}

impl HfTokenizer {
    /// Reads a `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<HfTokenizer> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("tokenizer", path, e))?;
        HfTokenizer::from_json(&text)
    }

    /// Parses a `tokenizer.json`; what this implementation does not do (another model, a
    /// normalizer, another pre-tokenizer, dropout, merges suffixes) is an error naming it.
    pub fn from_json(text: &str) -> Result<HfTokenizer> {
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
        let mut ranks = HashMap::with_capacity(merges.len());
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
            ranks.entry(pair).or_insert(rank as u32);
        }
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
        let pattern =
            Regex::new(r"^(?:'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+)")
                .map_err(|e| err(e.to_string()))?;
        Ok(HfTokenizer {
            vocab,
            ranks,
            added,
            bytes: byte_chars(),
            pattern,
            source_hash: super::Fnv1a::of(text.as_bytes()),
        })
    }

    /// FNV-1a of the `tokenizer.json` it was read from.
    pub fn content_hash(&self) -> u64 {
        self.source_hash
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
        let mut i = 0;
        while i < text.len() {
            let m = self
                .pattern
                .find(&text[i..])
                .ok_or_else(|| err(format!("no split matches at byte {i}")))?;
            let mut piece = m.as_str();
            let end = i + piece.len();
            // `\s+(?!\S)`: a run of two or more spaces before a non-space leaves its last one
            // to the next split.
            if piece.chars().all(char::is_whitespace) && end < text.len() {
                let mut chars = piece.char_indices();
                if let (Some(_), Some((last, _))) = (chars.nth(1), piece.char_indices().last()) {
                    piece = &piece[..last];
                }
            }
            self.bpe(piece, out)?;
            i += piece.len();
        }
        Ok(())
    }

    fn bpe(&self, piece: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut parts: Vec<String> = piece
            .bytes()
            .map(|b| self.bytes[b as usize].to_string())
            .collect();
        while parts.len() > 1 {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(k, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, k))
                })
                .min();
            let Some((rank, _)) = best else { break };
            let mut merged = Vec::with_capacity(parts.len());
            let mut k = 0;
            while k < parts.len() {
                if k + 1 < parts.len()
                    && self.ranks.get(&(parts[k].clone(), parts[k + 1].clone())) == Some(&rank)
                {
                    merged.push(format!("{}{}", parts[k], parts[k + 1]));
                    k += 2;
                } else {
                    merged.push(std::mem::take(&mut parts[k]));
                    k += 1;
                }
            }
            parts = merged;
        }
        for p in parts {
            out.push(
                *self
                    .vocab
                    .get(&p)
                    .ok_or_else(|| err(format!("the vocabulary has no token {p:?}")))?,
            );
        }
        Ok(())
    }
}
