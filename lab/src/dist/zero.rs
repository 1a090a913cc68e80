//! ZeRO-1 on the reducer: each bucket is reduce-scattered to the ranks owning its shards
//! (in `Reducer::finish`), each rank updates its pieces, and the updated pieces are
//! all-gathered back into every rank's parameters. Decisions that change what runs next (a
//! skipped AMP step) and statistics over the shards (a gradient norm) are all-reduced.

use super::buckets::{Layout, Reducer, Zero};
use super::comm::{Job, Reply};
use super::comm_error;
use super::shards::{self, Piece, Shards};
use rewind::Tensor;
use rewind::error::{Error, Result};
use rewind::optim::OptimState;
use std::rc::Rc;

impl Reducer {
    /// Makes this rank keep the optimizer for its shard of `params` (the list later passed to
    /// [`Reducer::hook`]); returns its pieces with the tensors to train for them, each holding
    /// its parameter's current values.
    pub fn enable_zero(&mut self, params: &[Tensor]) -> Result<Vec<(Piece, Tensor)>> {
        let layout = Layout::new(params, self.sizes);
        let shards = Rc::new(Shards::new(&layout, self.size()));
        let pieces = shards.pieces(self.rank());
        let tensors = pieces
            .iter()
            .map(|p| {
                let v = params[p.param].to_vec_f32();
                Tensor::from_vec(v[p.offset..p.offset + p.len].to_vec(), &[p.len])?
                    .requires_grad_(true)
            })
            .collect::<Result<Vec<_>>>()?;
        self.zero = Some(Zero {
            shards,
            pieces: pieces.clone(),
            tensors: tensors.clone(),
        });
        Ok(pieces.into_iter().zip(tensors).collect())
    }

    /// The shards, under ZeRO-1.
    pub fn shards(&self) -> Option<&Shards> {
        self.zero.as_ref().map(|z| &*z.shards)
    }

    fn zero(&self) -> Result<&Zero> {
        self.zero
            .as_ref()
            .ok_or_else(|| comm_error("ZeRO-1 is not enabled"))
    }

    /// After the optimizer updated this rank's pieces: every rank's pieces copied into
    /// `params` everywhere, bucket by bucket (all jobs queued, then the answers taken).
    pub fn all_gather_params(&mut self, params: &[Tensor]) -> Result<()> {
        let start = std::time::Instant::now();
        self.gather_into(params)?;
        self.times.all_gather_s += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn gather_into(&self, params: &[Tensor]) -> Result<()> {
        let z = self.zero()?;
        let layout = Layout::new(params, self.sizes);
        let buckets = layout.lens.len();
        // This rank's pieces per bucket, in flat order (their parameters' slots by offset).
        let mut order: Vec<usize> = (0..z.pieces.len()).collect();
        order.sort_by_key(|&k| z.shards.start(&z.pieces[k]));
        let mut per_bucket: Vec<Vec<usize>> = vec![Vec::new(); buckets];
        for k in order {
            per_bucket[layout.slots[z.pieces[k].param].0].push(k);
        }
        // Two buckets in flight at most: while one is copied into the parameters the next is
        // being gathered, and no more than two buckets' worth of buffers is held. Buffers are
        // taken here, on the training thread, which gives them back (see `Pool`).
        let mut next = 0;
        let mut send_next = |r: &Reducer| -> Result<()> {
            if next == buckets {
                return Ok(());
            }
            let b = next;
            next += 1;
            let counts = z.shards.counts(b);
            let mut mine = r.pool.take(counts[r.rank()]);
            let mut at = 0;
            for &k in &per_bucket[b] {
                let v = z.tensors[k]
                    .slice::<f32>()
                    .map_err(|_| comm_error("a shard's piece is not f32"))?;
                mine[at..at + v.len()].copy_from_slice(&v);
                at += v.len();
            }
            let all = r.pool.take(layout.lens[b]);
            r.send(Job::AllGather(mine, counts, all))
        };
        send_next(self)?;
        for b in 0..buckets {
            send_next(self)?;
            let Reply::Floats(all, _, spent) = self.answer()? else {
                return Err(comm_error("an all-gather answered with something else"));
            };
            for (i, p) in params.iter().enumerate() {
                let (pb, off, len) = layout.slots[i];
                if pb != b {
                    continue;
                }
                let src = all
                    .get(off..off + len)
                    .ok_or_else(|| comm_error("an all-gather returned a short bucket"))?;
                p.update_data::<f32>(|d| d.copy_from_slice(src))?;
            }
            self.pool.give(all);
            spent.into_iter().for_each(|v| self.pool.give(v));
        }
        Ok(())
    }

    /// This rank's part of a whole-tensor optimizer state (one entry per parameter).
    pub fn shard_state(&self, full: &OptimState) -> Result<OptimState> {
        let z = self.zero()?;
        z.shards.slice_state(full, &z.pieces)
    }

    /// The whole-tensor optimizer state on rank 0 (`None` on the others), from every rank's
    /// state of its pieces.
    pub fn gather_state(&self, mine: &OptimState) -> Result<Option<OptimState>> {
        let z = self.zero()?;
        let Reply::Bytes(all) = self.ask(Job::GatherBytes(shards::encode(mine)))? else {
            return Err(comm_error("a gather answered with something else"));
        };
        if self.rank() != 0 {
            return Ok(None);
        }
        let parts = all
            .iter()
            .map(|b| shards::decode(b))
            .collect::<Result<Vec<_>>>()?;
        z.shards.assemble(&parts).map(Some)
    }

    /// The squared gradient norm over every rank, from this rank's pieces' sums of squares
    /// (in piece order): per tensor (a split tensor's pieces added), then in parameter order,
    /// as one process sums it.
    pub fn total_squares(&self, piece_squares: &[f64]) -> Result<f64> {
        let z = self.zero()?;
        let mut v = vec![0.0; z.shards.tensors()];
        for (p, s) in z.pieces.iter().zip(piece_squares) {
            v[p.param] += s;
        }
        Ok(self.sum_stats(v)?.iter().sum())
    }

    /// Whether any rank's `flag` is set.
    pub fn any(&self, flag: bool) -> Result<bool> {
        Ok(self.sum_stats(vec![f64::from(u8::from(flag))])?[0] > 0.0)
    }

    /// `x` of every rank, in rank order.
    pub fn each(&self, x: f64) -> Result<Vec<f64>> {
        let mut v = vec![0.0; self.size()];
        *v.get_mut(self.rank())
            .ok_or_else(|| Error::invalid("dist", "rank out of range"))? = x;
        self.sum_stats(v)
    }
}
