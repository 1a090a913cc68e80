//! Training the byte-level BPE as the `tokenizers` library's `BpeTrainer` does with GPT-2's
//! pre-tokenizer, every byte in the alphabet and `<|endoftext|>` as the one special token: the
//! same merges in the same order, written as the same `tokenizer.json`.
//!
//! The vocabulary starts with the special token, then the 256 byte characters sorted by code
//! point. Each step merges the most frequent adjacent pair over all words (a word counted once
//! per occurrence; ties go to the pair of smaller ids), until the vocabulary is full or no pair
//! is left.

use super::tokenizer::{Tokenizer, byte_chars, pre_tokenize};
use rewind::error::Result;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// The special token the lab's tokenizers start with; batches pad with its id, 0.
pub const END_OF_TEXT: &str = "<|endoftext|>";

type Pair = (u32, u32);

/// Merges `pair` into `id` left to right, as BPE applies a merge.
fn merge(word: &[u32], pair: Pair, id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    out
}

/// The state of training: words as ids with their counts, and pair counts kept exact.
struct Trainer {
    words: Vec<Vec<u32>>,
    counts: Vec<i64>,
    pair_counts: HashMap<Pair, i64>,
    /// The words a pair was ever seen in (a superset of where it is now).
    seen_in: HashMap<Pair, Vec<usize>>,
}

impl Trainer {
    /// Adds (`sign` 1) or removes (−1) word `w`'s pairs; the pairs `record` picks are noted as
    /// seen in `w` and returned.
    fn count(&mut self, w: usize, sign: i64, record: impl Fn(Pair) -> bool) -> Vec<Pair> {
        let mut fresh = Vec::new();
        for p in self.words[w].windows(2) {
            let pair = (p[0], p[1]);
            *self.pair_counts.entry(pair).or_default() += sign * self.counts[w];
            if record(pair) {
                let seen = self.seen_in.entry(pair).or_default();
                if seen.last() != Some(&w) {
                    seen.push(w);
                }
                fresh.push(pair);
            }
        }
        fresh
    }
}

impl Tokenizer {
    /// Learns a byte-level BPE from `texts` (each a sequence, as the library's
    /// `train_from_iterator` takes them) until it has `vocab_size` ids, as `tokenizers`'
    /// `BpeTrainer(vocab_size, special_tokens=["<|endoftext|>"],
    /// initial_alphabet=ByteLevel.alphabet())` does.
    pub fn train<S: AsRef<str>>(texts: &[S], vocab_size: usize) -> Result<Tokenizer> {
        let bytes = byte_chars();
        let mut word_counts: HashMap<String, i64> = HashMap::new();
        for t in texts {
            for piece in pre_tokenize(t.as_ref()) {
                let word: String = piece?.bytes().map(|b| bytes[b as usize]).collect();
                *word_counts.entry(word).or_default() += 1;
            }
        }
        let mut alphabet = bytes.to_vec();
        alphabet.sort_unstable();
        let mut tokens: Vec<String> = std::iter::once(END_OF_TEXT.to_string())
            .chain(alphabet.iter().map(char::to_string))
            .collect();
        let mut id_of: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let char_id: HashMap<char, u32> = alphabet
            .iter()
            .map(|c| (*c, id_of[&c.to_string()]))
            .collect();
        let mut entries: Vec<(String, i64)> = word_counts.into_iter().collect();
        entries.sort_unstable();
        let mut t = Trainer {
            words: entries
                .iter()
                .map(|(w, _)| w.chars().map(|c| char_id[&c]).collect())
                .collect(),
            counts: entries.iter().map(|e| e.1).collect(),
            pair_counts: HashMap::new(),
            seen_in: HashMap::new(),
        };
        for w in 0..t.words.len() {
            t.count(w, 1, |_| true);
        }
        let mut queue: BinaryHeap<(i64, Reverse<Pair>)> = t
            .pair_counts
            .iter()
            .map(|(&p, &c)| (c, Reverse(p)))
            .collect();
        let mut merges: Vec<Pair> = Vec::new();
        while tokens.len() < vocab_size {
            let Some((count, Reverse(pair))) = queue.pop() else {
                break;
            };
            let now = t.pair_counts[&pair];
            if count != now {
                queue.push((now, Reverse(pair)));
                continue;
            }
            if now < 1 {
                break;
            }
            let token = format!("{}{}", tokens[pair.0 as usize], tokens[pair.1 as usize]);
            let id = *id_of.entry(token.clone()).or_insert_with(|| {
                tokens.push(token);
                (tokens.len() - 1) as u32
            });
            merges.push(pair);
            let mut fresh = Vec::new();
            for w in t.seen_in.get(&pair).cloned().unwrap_or_default() {
                if !t.words[w].windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                t.count(w, -1, |_| false);
                t.words[w] = merge(&t.words[w], pair, id);
                fresh.extend(t.count(w, 1, |p| p.0 == id || p.1 == id));
            }
            fresh.sort_unstable();
            fresh.dedup();
            for p in fresh {
                queue.push((t.pair_counts[&p], Reverse(p)));
            }
        }
        Tokenizer::from_json(&tokenizer_json(&tokens, &merges))
    }
}

/// The `tokenizer.json` text the `tokenizers` library saves for this vocabulary and merges.
fn tokenizer_json(tokens: &[String], merges: &[Pair]) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let vocab: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("      {}: {i}", q(t)))
        .collect();
    let merges: Vec<String> = merges
        .iter()
        .map(|&(a, b)| {
            format!(
                "      [\n        {},\n        {}\n      ]",
                q(&tokens[a as usize]),
                q(&tokens[b as usize])
            )
        })
        .collect();
    let list = |items: Vec<String>, open: &str, close: &str| {
        if items.is_empty() {
            format!("{open}{close}")
        } else {
            format!("{open}\n{}\n    {close}", items.join(",\n"))
        }
    };
    format!(
        r#"{{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {{
      "id": 0,
      "content": {eot},
      "single_word": false,
      "lstrip": false,
      "rstrip": false,
      "normalized": false,
      "special": true
    }}
  ],
  "normalizer": null,
  "pre_tokenizer": {{
    "type": "ByteLevel",
    "add_prefix_space": false,
    "trim_offsets": true,
    "use_regex": true
  }},
  "post_processor": null,
  "decoder": {{
    "type": "ByteLevel",
    "add_prefix_space": true,
    "trim_offsets": true,
    "use_regex": true
  }},
  "model": {{
    "type": "BPE",
    "dropout": null,
    "unk_token": null,
    "continuing_subword_prefix": null,
    "end_of_word_suffix": null,
    "fuse_unk": false,
    "byte_fallback": false,
    "ignore_merges": false,
    "vocab": {vocab},
    "merges": {merges}
  }}
}}"#,
        eot = q(END_OF_TEXT),
        vocab = list(vocab, "{", "}"),
        merges = list(merges, "[", "]"),
    )
}
