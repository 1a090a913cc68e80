//! A byte-level BPE tokenizer: ids 0–255 are bytes, 256 is padding, then one id per learned
//! merge. Text is first split into words (a space stays attached to the word after it), so
//! merges never cross word boundaries; encoding applies merges by rank, as GPT-2's BPE does.

use std::collections::HashMap;

/// The padding id.
pub const PAD: u32 = 256;
const FIRST_MERGE: u32 = 257;

/// A trained tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenizer {
    /// Merges in the order learned: `merges[i]` makes id `257 + i`.
    pub merges: Vec<(u32, u32)>,
    ranks: HashMap<(u32, u32), u32>,
    bytes: Vec<Vec<u8>>,
}

/// Splits text into words, each space kept at the front of the word after it.
fn words(text: &str) -> Vec<&[u8]> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..b.len() {
        if b[i] == b' ' && b[i - 1] != b' ' {
            out.push(&b[start..i]);
            start = i;
        }
    }
    if start < b.len() {
        out.push(&b[start..]);
    }
    out
}

fn merge_pair(seq: &[u32], pair: (u32, u32), id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(seq.len());
    let mut i = 0;
    while i < seq.len() {
        if i + 1 < seq.len() && (seq[i], seq[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(seq[i]);
            i += 1;
        }
    }
    out
}

impl Tokenizer {
    fn from_merges(merges: Vec<(u32, u32)>) -> Tokenizer {
        let mut bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        bytes.push(Vec::new()); // PAD decodes to nothing
        for &(a, b) in &merges {
            let mut v = bytes[a as usize].clone();
            v.extend_from_slice(&bytes[b as usize]);
            bytes.push(v);
        }
        let ranks = merges
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i as u32))
            .collect();
        Tokenizer {
            merges,
            ranks,
            bytes,
        }
    }

    /// Learns merges from `texts` until the vocabulary has `vocab_size` ids (or no pair repeats).
    /// Ties between equally frequent pairs go to the smallest pair, so training is deterministic.
    pub fn train<S: AsRef<str>>(texts: &[S], vocab_size: usize) -> Tokenizer {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for t in texts {
            for w in words(t.as_ref()) {
                *counts.entry(w.to_vec()).or_default() += 1;
            }
        }
        let mut seqs: Vec<(Vec<u32>, usize)> = counts
            .into_iter()
            .map(|(w, n)| (w.iter().map(|&b| b as u32).collect(), n))
            .collect();
        seqs.sort();
        let mut merges = Vec::new();
        while (FIRST_MERGE as usize + merges.len()) < vocab_size {
            let mut pairs: HashMap<(u32, u32), usize> = HashMap::new();
            for (s, n) in &seqs {
                for w in s.windows(2) {
                    *pairs.entry((w[0], w[1])).or_default() += n;
                }
            }
            let Some((&pair, &n)) = pairs.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            else {
                break;
            };
            if n < 2 {
                break;
            }
            let id = FIRST_MERGE + merges.len() as u32;
            merges.push(pair);
            for (s, _) in seqs.iter_mut() {
                if s.windows(2).any(|w| (w[0], w[1]) == pair) {
                    *s = merge_pair(s, pair, id);
                }
            }
        }
        Tokenizer::from_merges(merges)
    }

    /// A hash of the merges, which define the tokenizer (see [`super::Fnv1a`]).
    pub fn content_hash(&self) -> u64 {
        let mut h = super::Fnv1a::default();
        for &(a, b) in &self.merges {
            h.eat(&a.to_le_bytes());
            h.eat(&b.to_le_bytes());
        }
        h.finish()
    }

    /// Number of ids (bytes, padding, merges).
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    fn encode_word(&self, w: &[u8], out: &mut Vec<u32>) {
        let mut seq: Vec<u32> = w.iter().map(|&b| b as u32).collect();
        loop {
            let best = seq
                .windows(2)
                .filter_map(|p| self.ranks.get(&(p[0], p[1])).map(|&r| (r, (p[0], p[1]))))
                .min();
            let Some((rank, pair)) = best else { break };
            seq = merge_pair(&seq, pair, FIRST_MERGE + rank);
        }
        out.extend_from_slice(&seq);
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for w in words(text) {
            self.encode_word(w, &mut out);
        }
        out
    }

    /// The text of `ids` (invalid UTF-8 is replaced; padding decodes to nothing).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut b = Vec::new();
        for &i in ids {
            if let Some(bytes) = self.bytes.get(i as usize) {
                b.extend_from_slice(bytes);
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }
}
