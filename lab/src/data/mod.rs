//! Data with no download: a seeded synthetic corpus with long-tailed lengths, the byte-level
//! BPE tokenizer (`tokenizer.json`, read or trained on the corpus), and collators for fixed,
//! dynamic and length-grouped padding.

pub mod bpe_trainer;
pub mod collate;
mod conversations;
pub mod corpus;
pub mod text_file;
pub mod tokenizer;

pub use bpe_trainer::END_OF_TEXT;
pub use collate::{Batch, PAD, Padding, Sample, Tokens, batches};
pub use conversations::{Message, Role, read_conversations, render_chatglm3};
pub use corpus::{CorpusConfig, synthetic_corpus};
pub use text_file::read_paragraphs;
pub use tokenizer::Tokenizer;

/// FNV-1a (64-bit): the content hash of save files and of the text a run trained on. It
/// detects corruption and changed inputs, not tampering.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Mixes `bytes` in.
    pub fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::default();
        h.eat(bytes);
        h.finish()
    }
}

/// A small deterministic generator for data pipelines (kept apart from the engine's, so data
/// order never shifts dropout masks).
#[derive(Debug, Clone)]
pub struct DataRng(u64);

impl DataRng {
    /// Seeded.
    pub fn new(seed: u64) -> DataRng {
        DataRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits (SplitMix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}
