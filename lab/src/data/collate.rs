//! Batching token sequences for causal language modelling, with three padding strategies:
//! fixed (every batch padded to one length), dynamic (each batch to its own longest sample)
//! and grouped (length-grouped: samples sorted by length within chunks of several batches,
//! then the batches shuffled). Labels are the next token (or a sample's own labels), −100 at
//! padded and last positions;
//! the key mask marks padded positions so attention can hide them.

use super::DataRng;
use rewind::dtype::DType;
use rewind::error::Result;
use rewind::indices::Indices;
use rewind::ops::loss::IGNORE_INDEX;
use rewind::tensor::Tensor;

/// The id padded positions hold: 0, the `<|endoftext|>` the lab's tokenizer starts with. Any id
/// would do: padding is masked out of attention and loss.
pub const PAD: u32 = 0;

/// How batches are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Truncate or pad every sample to this length.
    Fixed(usize),
    /// Pad each batch to its longest sample.
    Dynamic,
    /// Sort by length within chunks of `chunk_batches` batches, pad dynamically, shuffle batches.
    Grouped {
        /// Batches per sorting chunk.
        chunk_batches: usize,
    },
}

/// A token sequence to batch: its ids and the target each position is scored on.
pub trait Tokens {
    /// The ids.
    fn ids(&self) -> &[u32];
    /// The label of position `p` (< len − 1): the next token, or −100 where it is not learnt.
    fn target(&self, p: usize) -> i64;
}

impl Tokens for Vec<u32> {
    fn ids(&self) -> &[u32] {
        self
    }
    fn target(&self, p: usize) -> i64 {
        self[p + 1] as i64
    }
}

/// A token sequence and, where not every next token is learnt (conversations: the assistant's
/// turns only), its labels in transformers' convention: the label of token i is token i itself
/// or −100, and position i is scored on label i + 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The ids.
    pub ids: Vec<u32>,
    /// One label per id; `None`: every next token is learnt.
    pub labels: Option<Vec<i64>>,
}

impl Tokens for Sample {
    fn ids(&self) -> &[u32] {
        &self.ids
    }
    fn target(&self, p: usize) -> i64 {
        self.labels
            .as_ref()
            .map_or(self.ids[p + 1] as i64, |l| l[p + 1])
    }
}

/// One padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input ids `[B, T]`, padded with [`PAD`].
    pub ids: Indices,
    /// Next-token labels `[B, T]`, −100 where there is no next real token.
    pub labels: Indices,
    /// `[B, 1, T]` f32: 1.0 at padded key positions (for `masked_fill` on attention scores).
    pub key_pad_mask: Tensor,
    /// Each sample's real length (after truncation).
    pub lengths: Vec<usize>,
    /// Which samples of the input list, in batch order.
    pub sample_ids: Vec<usize>,
}

impl Batch {
    /// Real tokens in the batch.
    pub fn real_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Positions the loss is taken over (labels other than −100).
    pub fn targets(&self) -> usize {
        let ignore = rewind::ops::loss::IGNORE_INDEX;
        self.labels.data().iter().filter(|&&l| l != ignore).count()
    }

    /// Token slots, padding included.
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    /// The key-padding mask as `[B, T]` (1.0 at padded keys), as the families' layers take it.
    pub fn key_mask(&self) -> Result<Tensor> {
        let (b, t) = (self.ids.shape()[0], self.ids.shape()[1]);
        self.key_pad_mask.reshape(&[b, t])
    }
}

fn build<S: Tokens>(samples: &[S], order: &[usize], width: Option<usize>) -> Result<Batch> {
    let lengths: Vec<usize> = order
        .iter()
        .map(|&i| {
            let n = samples[i].ids().len();
            width.map_or(n, |w| n.min(w))
        })
        .collect();
    let t = width
        .unwrap_or_else(|| lengths.iter().copied().max().unwrap_or(0))
        .max(1);
    let b = order.len();
    let (mut ids, mut labels, mut mask) = (
        vec![PAD as i64; b * t],
        vec![IGNORE_INDEX; b * t],
        vec![1.0f32; b * t],
    );
    for (r, (&i, &len)) in order.iter().zip(&lengths).enumerate() {
        let s = &samples[i];
        for p in 0..len {
            ids[r * t + p] = s.ids()[p] as i64;
            mask[r * t + p] = 0.0;
            if p + 1 < len {
                labels[r * t + p] = s.target(p);
            }
        }
    }
    Ok(Batch {
        ids: Indices::new(ids, &[b, t])?,
        labels: Indices::new(labels, &[b, t])?,
        key_pad_mask: Tensor::from_vec(mask, &[b, 1, t])?.to_dtype(DType::F32)?,
        lengths,
        sample_ids: order.to_vec(),
    })
}

/// One epoch of batches over `samples` (each sample once), shuffled with `seed`.
pub fn batches<S: Tokens>(
    samples: &[S],
    batch_size: usize,
    padding: Padding,
    seed: u64,
) -> Result<Vec<Batch>> {
    let bs = batch_size.max(1);
    let mut rng = DataRng::new(seed);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    rng.shuffle(&mut order);
    match padding {
        Padding::Fixed(w) => order
            .chunks(bs)
            .map(|c| build(samples, c, Some(w)))
            .collect(),
        Padding::Dynamic => order.chunks(bs).map(|c| build(samples, c, None)).collect(),
        Padding::Grouped { chunk_batches } => {
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for chunk in order.chunks(bs * chunk_batches.max(1)) {
                let mut sorted = chunk.to_vec();
                sorted.sort_by_key(|&i| (samples[i].ids().len(), i));
                groups.extend(sorted.chunks(bs).map(|c| c.to_vec()));
            }
            rng.shuffle(&mut groups);
            groups.iter().map(|c| build(samples, c, None)).collect()
        }
    }
}

/// Fraction of token slots that are padding over `batches`.
pub fn padded_fraction(batches: &[Batch]) -> f64 {
    let (real, slots) = batches
        .iter()
        .fold((0, 0), |(r, s), b| (r + b.real_tokens(), s + b.slots()));
    if slots == 0 {
        0.0
    } else {
        1.0 - real as f64 / slots as f64
    }
}
