//! ZeRO-1's split of the optimizer over the ranks. The gradient buckets laid end to end (the
//! parameters in reverse order) are cut into one contiguous shard per rank, each cut moved
//! down to a multiple of 256 elements from the start of the tensor it falls in, so an 8-bit
//! block never straddles two shards; rank r keeps the optimizer state of its shard only (1/N
//! of it, give or take a block). A rank's shard is a list of pieces — (parameter, offset,
//! length) — each trained as a 1-D tensor of its own. Saved states are always the whole
//! tensors' (what one process saves), so a run saved by N ranks resumes on M.

use super::buckets::Layout;
use super::comm_error;
use rewind::error::Result;
use rewind::optim::{BLOCK, OptimState, StateBuffer};

/// A rank's slice of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The parameter's index in the trained list.
    pub param: usize,
    /// First element of the slice.
    pub offset: usize,
    /// Elements in it.
    pub len: usize,
}

/// Where every rank's shard lies in the buckets' flat order.
#[derive(Debug, Clone, PartialEq)]
pub struct Shards {
    /// Flat start of each bucket, and the total at the end.
    buckets: Vec<usize>,
    /// Flat start and length of each parameter.
    params: Vec<(usize, usize)>,
    /// Flat start of each rank's shard, and the total at the end.
    bounds: Vec<usize>,
}

impl Shards {
    /// Cuts `layout`'s buckets into `ranks` shards.
    pub(super) fn new(layout: &Layout, ranks: usize) -> Shards {
        let mut buckets = vec![0];
        for &n in &layout.lens {
            buckets.push(buckets.last().copied().unwrap_or(0) + n);
        }
        let params: Vec<(usize, usize)> = layout
            .slots
            .iter()
            .map(|&(b, off, len)| (buckets[b] + off, len))
            .collect();
        let total = *buckets.last().unwrap_or(&0);
        let mut bounds = vec![0];
        for r in 1..ranks {
            let even = (total as u128 * r as u128 / ranks as u128) as usize;
            let cut = params
                .iter()
                .find(|&&(s, n)| s <= even && even < s + n)
                .map_or(even, |&(s, _)| s + (even - s) / BLOCK * BLOCK);
            bounds.push(cut.max(*bounds.last().unwrap_or(&0)));
        }
        bounds.push(total);
        Shards {
            buckets,
            params,
            bounds,
        }
    }

    /// The cut of parameters of `numels` elements (in parameter order) into `ranks` shards:
    /// where the trainer cuts them, whatever its bucket sizes (buckets only group the flat
    /// order, which is the reverse parameter order).
    pub fn cut(numels: &[usize], ranks: usize) -> Shards {
        let mut slots = vec![(0, 0, 0); numels.len()];
        let mut lens = Vec::new();
        for (i, &n) in numels.iter().enumerate().rev() {
            slots[i] = (lens.len(), 0, n);
            lens.push(n);
        }
        Shards::new(&Layout { slots, lens }, ranks.max(1))
    }

    /// Tensors the shards cut.
    pub fn tensors(&self) -> usize {
        self.params.len()
    }

    /// Ranks the shards are for.
    pub fn ranks(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Elements in rank `r`'s shard.
    pub fn shard_len(&self, r: usize) -> usize {
        self.bounds[r + 1] - self.bounds[r]
    }

    /// How many elements of bucket `b` each rank owns (its reduce-scatter's counts).
    pub(super) fn counts(&self, b: usize) -> Vec<usize> {
        let (lo, hi) = (self.buckets[b], self.buckets[b + 1]);
        (0..self.ranks())
            .map(|r| {
                let (s, e) = (self.bounds[r].max(lo), self.bounds[r + 1].min(hi));
                e.saturating_sub(s)
            })
            .collect()
    }

    /// The flat range of bucket `b` that rank `r` owns.
    pub(super) fn owned(&self, r: usize, b: usize) -> (usize, usize) {
        let s = self.bounds[r].max(self.buckets[b]);
        (s, self.bounds[r + 1].min(self.buckets[b + 1]).max(s))
    }

    /// Flat start of a piece.
    pub(super) fn start(&self, p: &Piece) -> usize {
        self.params[p.param].0 + p.offset
    }

    /// Rank `r`'s pieces, in parameter order.
    pub fn pieces(&self, r: usize) -> Vec<Piece> {
        let (lo, hi) = (self.bounds[r], self.bounds[r + 1]);
        self.params
            .iter()
            .enumerate()
            .filter_map(|(param, &(s, n))| {
                let (a, b) = (s.max(lo), (s + n).min(hi));
                (a < b).then_some(Piece {
                    param,
                    offset: a - s,
                    len: b - a,
                })
            })
            .collect()
    }

    /// The part of a whole-tensor state (one entry per parameter) that `pieces` keep.
    pub fn slice_state(&self, full: &OptimState, pieces: &[Piece]) -> Result<OptimState> {
        let buffers = pieces
            .iter()
            .map(|p| {
                let bufs = full
                    .buffers
                    .get(p.param)
                    .ok_or_else(|| comm_error(format!("the state has no parameter {}", p.param)))?;
                bufs.iter()
                    .map(|(name, b)| Ok((name.clone(), slice(name, b, p)?)))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(OptimState {
            step: full.step,
            buffers,
        })
    }

    /// The whole tensors' state from every rank's piece states (rank order).
    pub fn assemble(&self, parts: &[OptimState]) -> Result<OptimState> {
        let mut whole: Vec<Option<Vec<(String, StateBuffer)>>> = vec![None; self.params.len()];
        for (r, part) in parts.iter().enumerate() {
            let pieces = self.pieces(r);
            if pieces.len() != part.buffers.len() {
                return Err(comm_error(format!(
                    "rank {r} sent state for {} pieces, its shard has {}",
                    part.buffers.len(),
                    pieces.len()
                )));
            }
            for (p, bufs) in pieces.iter().zip(&part.buffers) {
                match &mut whole[p.param] {
                    slot @ None => *slot = Some(bufs.clone()),
                    Some(have) => append(have, bufs, p.param)?,
                }
            }
        }
        Ok(OptimState {
            step: parts.first().map_or(0, |s| s.step),
            buffers: whole.into_iter().map(Option::unwrap_or_default).collect(),
        })
    }
}

/// Whether a buffer holds one value per 256-element block (8-bit AdamW's absmax).
fn per_block(name: &str) -> bool {
    name.starts_with("absmax")
}

/// A piece's part of one whole-tensor buffer.
fn slice(name: &str, b: &StateBuffer, p: &Piece) -> Result<StateBuffer> {
    let (lo, hi) = if name == "step" {
        (0, 1)
    } else if per_block(name) {
        (p.offset / BLOCK, (p.offset + p.len).div_ceil(BLOCK))
    } else {
        (p.offset, p.offset + p.len)
    };
    let bad = || comm_error(format!("state buffer {name} is shorter than its parameter"));
    Ok(match b {
        StateBuffer::F32(v) => StateBuffer::F32(v.get(lo..hi).ok_or_else(bad)?.to_vec()),
        StateBuffer::U8(v) => StateBuffer::U8(v.get(lo..hi).ok_or_else(bad)?.to_vec()),
    })
}

/// Appends the next piece's buffers to a parameter's (a step count is the same in both).
fn append(
    have: &mut [(String, StateBuffer)],
    next: &[(String, StateBuffer)],
    i: usize,
) -> Result<()> {
    let differ = || comm_error(format!("the shards of parameter {i} hold different states"));
    if have.len() != next.len() {
        return Err(differ());
    }
    for ((name, a), (other, b)) in have.iter_mut().zip(next) {
        if name != other {
            return Err(differ());
        }
        match (a, b) {
            (StateBuffer::F32(_), StateBuffer::F32(_)) if name == "step" => {}
            (StateBuffer::F32(a), StateBuffer::F32(b)) => a.extend_from_slice(b),
            (StateBuffer::U8(a), StateBuffer::U8(b)) => a.extend_from_slice(b),
            _ => return Err(differ()),
        }
    }
    Ok(())
}

/// A state as bytes, to gather on rank 0.
pub(super) fn encode(s: &OptimState) -> Vec<u8> {
    let mut out = Vec::new();
    let num = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u64).to_le_bytes());
    num(&mut out, s.step as usize);
    num(&mut out, s.buffers.len());
    for bufs in &s.buffers {
        num(&mut out, bufs.len());
        for (name, b) in bufs {
            num(&mut out, name.len());
            out.extend_from_slice(name.as_bytes());
            match b {
                StateBuffer::F32(v) => {
                    out.push(0);
                    num(&mut out, v.len());
                    v.iter()
                        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                }
                StateBuffer::U8(v) => {
                    out.push(1);
                    num(&mut out, v.len());
                    out.extend_from_slice(v);
                }
            }
        }
    }
    out
}

/// Reads what [`encode`] wrote.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n);
        let s = end
            .and_then(|e| self.bytes.get(self.at..e))
            .ok_or_else(|| comm_error("a gathered optimizer state is truncated"))?;
        self.at += n;
        Ok(s)
    }

    fn num(&mut self) -> Result<usize> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        usize::try_from(u64::from_le_bytes(b))
            .map_err(|_| comm_error("a gathered count does not fit"))
    }
}

/// The state [`encode`] wrote.
pub(super) fn decode(bytes: &[u8]) -> Result<OptimState> {
    let mut r = Reader { bytes, at: 0 };
    let step = r.num()? as u64;
    let params = r.num()?;
    let mut buffers = Vec::new();
    for _ in 0..params {
        let n = r.num()?;
        let mut bufs = Vec::new();
        for _ in 0..n {
            let len = r.num()?;
            let name = String::from_utf8(r.take(len)?.to_vec())
                .map_err(|_| comm_error("a gathered buffer name is not UTF-8"))?;
            let kind = r.take(1)?[0];
            let len = r.num()?;
            let b = match kind {
                0 => StateBuffer::F32(
                    r.take(
                        len.checked_mul(4)
                            .ok_or_else(|| comm_error("oversized buffer"))?,
                    )?
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
                ),
                1 => StateBuffer::U8(r.take(len)?.to_vec()),
                _ => return Err(comm_error("a gathered buffer of unknown kind")),
            };
            bufs.push((name, b));
        }
        buffers.push(bufs);
    }
    Ok(OptimState { step, buffers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_block_boundaries_of_the_tensor_they_split() {
        // Flat order: 1000 (param 2), then 5000 (param 1), then 300 (param 0): 6300 in all.
        // Halfway is 3150, inside param 1 at offset 2150, moved down to 2048.
        let s = Shards::cut(&[300, 5000, 1000], 2);
        assert_eq!(s.bounds, [0, 1000 + 2048, 6300]);
        let (a, b) = (s.pieces(0), s.pieces(1));
        assert_eq!(
            a,
            [
                Piece {
                    param: 1,
                    offset: 0,
                    len: 2048
                },
                Piece {
                    param: 2,
                    offset: 0,
                    len: 1000
                },
            ]
        );
        assert_eq!(
            b,
            [
                Piece {
                    param: 0,
                    offset: 0,
                    len: 300
                },
                Piece {
                    param: 1,
                    offset: 2048,
                    len: 2952
                },
            ]
        );
        // Each rank's share is within one block of half.
        for r in 0..2 {
            assert!(s.shard_len(r).abs_diff(3150) < BLOCK);
        }
        // Bucket 1 (param 1) is split 2048 / 2952, the others belong to one rank each.
        assert_eq!(s.counts(0), [1000, 0]);
        assert_eq!(s.counts(1), [2048, 2952]);
        assert_eq!(s.counts(2), [0, 300]);
    }

    #[test]
    fn a_sliced_state_assembles_back_to_the_whole() {
        let s = Shards::cut(&[300, 5000, 1000], 3);
        let numel: [usize; 3] = [300, 5000, 1000];
        let full = OptimState {
            step: 7,
            buffers: numel
                .iter()
                .map(|&n| {
                    vec![
                        (
                            "state1".into(),
                            StateBuffer::U8((0..n).map(|i| i as u8).collect()),
                        ),
                        (
                            "absmax1".into(),
                            StateBuffer::F32((0..n.div_ceil(BLOCK)).map(|i| i as f32).collect()),
                        ),
                        ("step".into(), StateBuffer::F32(vec![7.0])),
                    ]
                })
                .collect(),
        };
        let parts: Vec<OptimState> = (0..3)
            .map(|r| s.slice_state(&full, &s.pieces(r)).unwrap())
            .map(|p| decode(&encode(&p)).unwrap())
            .collect();
        assert_eq!(s.assemble(&parts).unwrap(), full);
    }
}
