//! Batching token sequences for causal language modelling, with three padding strategies:
//! fixed (every batch padded to one length), dynamic (each batch to its own longest sample)
//! and grouped (length-grouped: samples sorted by length within chunks of several batches,
//! then the batches shuffled). Labels are the next token, −100 at padded and last positions;
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

fn build(samples: &[Vec<u32>], order: &[usize], width: Option<usize>) -> Result<Batch> {
    let lengths: Vec<usize> = order
        .iter()
        .map(|&i| width.map_or(samples[i].len(), |w| samples[i].len().min(w)))
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
        for p in 0..len {
            ids[r * t + p] = samples[i][p] as i64;
            mask[r * t + p] = 0.0;
            if p + 1 < len {
                labels[r * t + p] = samples[i][p + 1] as i64;
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
pub fn batches(
    samples: &[Vec<u32>],
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
                sorted.sort_by_key(|&i| (samples[i].len(), i));
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
