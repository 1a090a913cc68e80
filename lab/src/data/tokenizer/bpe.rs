//! The BPE model of `tokenizer.json` (`"type": "BPE"`), as the `tokenizers` library runs it:
//! each character of a piece becomes its token — or, missing from the vocabulary, its UTF-8
//! bytes as `<0xXX>` tokens (`byte_fallback`), else the unknown token (runs of them fused with
//! `fuse_unk`), else nothing — then the adjacent pair of lowest merge rank merges until none
//! applies. With `ignore_merges` a piece that is itself a token is that token. Byte-level
//! pieces are looked up byte by byte through GPT-2's printable characters.

use super::{byte_chars, err};
use rewind::error::Result;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The model's vocabulary, merges and options.
#[derive(Debug, Clone)]
pub struct Bpe {
    pub(super) vocab: HashMap<String, u32>,
    /// `(left id, right id)` packed in a u64 → (rank, merged id).
    merges: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
    /// The id of each byte's printable character, `u32::MAX` where the vocabulary lacks it.
    byte_ids: [u32; 256],
    /// The id of `<0xXX>` for each byte (`byte_fallback`), `u32::MAX` where absent.
    fallback_ids: Option<[u32; 256]>,
    unk: Option<u32>,
    fuse_unk: bool,
    ignore_merges: bool,
}

impl Bpe {
    /// Parses `model`; options it does not do (dropout, subword prefixes and suffixes) are
    /// errors naming them.
    pub fn parse(model: &Value) -> Result<Bpe> {
        if model["type"] != "BPE" {
            return Err(err(format!(
                "tokenizer.json: model type {} is not supported (only BPE)",
                model["type"]
            )));
        }
        if !model["dropout"].is_null() {
            return Err(err("tokenizer.json: model.dropout is not supported"));
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if !(model[key].is_null() || model[key] == "") {
                return Err(err(format!("tokenizer.json: model.{key} is not supported")));
            }
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
                Value::String(s) => s.split_once(' '),
                Value::Array(a) if a.len() == 2 => a[0].as_str().zip(a[1].as_str()),
                _ => None,
            }
            .ok_or_else(|| err(format!("tokenizer.json: merge {rank} is malformed: {m}")))?;
            let (a, b) = (id_of(pair.0, rank)?, id_of(pair.1, rank)?);
            let merged = id_of(&format!("{}{}", pair.0, pair.1), rank)?;
            ranks.entry(pack(a, b)).or_insert((rank as u32, merged));
        }
        let byte_ids = byte_chars().map(|c| vocab.get(&c.to_string()).copied().unwrap_or(u32::MAX));
        let fallback_ids = (model["byte_fallback"] == true).then(|| {
            std::array::from_fn(|b| {
                vocab
                    .get(&format!("<0x{b:02X}>"))
                    .copied()
                    .unwrap_or(u32::MAX)
            })
        });
        let unk = match model["unk_token"].as_str() {
            None => None,
            Some(u) => Some(vocab.get(u).copied().ok_or_else(|| {
                err(format!(
                    "tokenizer.json: the unknown token {u:?} is not in the vocabulary"
                ))
            })?),
        };
        Ok(Bpe {
            vocab,
            merges: ranks,
            byte_ids,
            fallback_ids,
            unk,
            fuse_unk: model["fuse_unk"] == true,
            ignore_merges: model["ignore_merges"] == true,
        })
    }

    /// Appends the ids of `piece` to `out`; `byte_level`: each byte is its printable character.
    /// `ranks` is scratch space, reused across pieces.
    pub fn encode(
        &self,
        piece: &str,
        byte_level: bool,
        out: &mut Vec<u32>,
        ranks: &mut Vec<(u32, u32)>,
    ) {
        let start = out.len();
        if byte_level {
            let ids = piece.bytes().map(|b| self.byte_ids[b as usize]);
            if self.ignore_merges || ids.clone().any(|id| id == u32::MAX) {
                // The slow path: the piece as the model sees it, character by character.
                let chars = byte_chars();
                let mapped: String = piece.bytes().map(|b| chars[b as usize]).collect();
                return self.encode_chars(&mapped, out, ranks);
            }
            out.extend(ids);
        } else {
            return self.encode_chars(piece, out, ranks);
        }
        self.merge(out, start, ranks);
    }

    /// The library's `merge_word` on characters, after the `ignore_merges` shortcut.
    fn encode_chars(&self, word: &str, out: &mut Vec<u32>, ranks: &mut Vec<(u32, u32)>) {
        if self.ignore_merges
            && let Some(&id) = self.vocab.get(word)
        {
            out.push(id);
            return;
        }
        let start = out.len();
        let mut unk: Option<u32> = None;
        let mut buf = [0u8; 4];
        for c in word.chars() {
            let s: &str = c.encode_utf8(&mut buf);
            if let Some(&id) = self.vocab.get(s) {
                if let Some(u) = unk.take() {
                    out.push(u);
                }
                out.push(id);
                continue;
            }
            if let Some(fb) = &self.fallback_ids {
                let ids: Vec<u32> = s.bytes().map(|b| fb[b as usize]).collect();
                if ids.iter().all(|&id| id != u32::MAX) {
                    // As the library: a pending unknown token waits past the bytes.
                    out.extend(ids);
                    continue;
                }
            }
            if let Some(u) = self.unk {
                match unk {
                    Some(_) if self.fuse_unk => {}
                    Some(prev) => {
                        out.push(prev);
                        unk = Some(u);
                    }
                    None => unk = Some(u),
                }
            }
        }
        if let Some(u) = unk {
            out.push(u);
        }
        self.merge(out, start, ranks);
    }

    /// BPE on `out[start..]` as the library's `Word::merge_all`: the adjacent pair of lowest
    /// (rank, position) merges, and the pairs it makes with its neighbours compete next, until
    /// no pair has a merge. A short word rescans its pairs (cheap, no allocation); a long one
    /// keeps them in a queue, as the library does.
    fn merge(&self, out: &mut Vec<u32>, start: usize, ranks: &mut Vec<(u32, u32)>) {
        let n = out.len() - start;
        if n < 2 {
            return;
        }
        if n <= SHORT {
            return self.merge_short(out, start, ranks);
        }
        const NONE: usize = usize::MAX;
        // Symbols as a linked list: (id, prev, next, alive).
        let mut sym: Vec<(u32, usize, usize, bool)> = (0..n)
            .map(|i| {
                let prev = if i == 0 { NONE } else { i - 1 };
                let next = if i + 1 == n { NONE } else { i + 1 };
                (out[start + i], prev, next, true)
            })
            .collect();
        let mut queue = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, id)) = self.merges.get(&pack(sym[i].0, sym[i + 1].0)) {
                queue.push(Reverse((rank, i, id)));
            }
        }
        while let Some(Reverse((_, pos, id))) = queue.pop() {
            let (left, prev, next, alive) = sym[pos];
            if !alive || next == NONE {
                continue;
            }
            let right = sym[next].0;
            if self.merges.get(&pack(left, right)).map(|m| m.1) != Some(id) {
                continue;
            }
            let after = sym[next].2;
            sym[next].3 = false;
            sym[pos].0 = id;
            sym[pos].2 = after;
            if after != NONE {
                sym[after].1 = pos;
            }
            if prev != NONE
                && let Some(&(rank, new)) = self.merges.get(&pack(sym[prev].0, id))
            {
                queue.push(Reverse((rank, prev, new)));
            }
            if after != NONE
                && let Some(&(rank, new)) = self.merges.get(&pack(id, sym[after].0))
            {
                queue.push(Reverse((rank, pos, new)));
            }
        }
        out.truncate(start);
        let mut i = 0;
        while i != NONE {
            out.push(sym[i].0);
            i = sym[i].2;
        }
    }
}

impl Bpe {
    /// [`Bpe::merge`] by rescanning: each pair's (rank, merged id) kept beside the symbols in
    /// `ranks` (at most [`SHORT`] symbols).
    fn merge_short(&self, out: &mut Vec<u32>, start: usize, ranks: &mut Vec<(u32, u32)>) {
        let rank_of = |a: u32, b: u32| {
            self.merges
                .get(&pack(a, b))
                .copied()
                .unwrap_or((u32::MAX, 0))
        };
        ranks.clear();
        ranks.extend(out[start..].windows(2).map(|w| rank_of(w[0], w[1])));
        let mut m = ranks.len();
        loop {
            let mut best = (u32::MAX, 0);
            for (i, &(r, _)) in ranks[..m].iter().enumerate() {
                if r < best.0 {
                    best = (r, i);
                }
            }
            if best.0 == u32::MAX {
                return;
            }
            let i = best.1;
            out[start + i] = ranks[i].1;
            out.remove(start + i + 1);
            ranks.copy_within(i + 1..m, i);
            m -= 1;
            if i > 0 {
                ranks[i - 1] = rank_of(out[start + i - 1], out[start + i]);
            }
            if i < m {
                ranks[i] = rank_of(out[start + i], out[start + i + 1]);
            }
        }
    }
}

/// Words of up to this many symbols merge by rescanning.
const SHORT: usize = 48;

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
