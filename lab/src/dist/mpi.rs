//! MPI as the transport: the C library through the `mpi` crate, initialised on the
//! communication thread (every call stays on it: MPI's "funneled" level suffices).

use super::{Collective, comm_error};
use mpi::Count;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use rewind::error::Result;

/// `MPI_COMM_WORLD` of an initialised MPI, finalised when dropped.
pub(super) struct Mpi {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI on the calling thread.
    pub(super) fn init() -> Result<Box<dyn Collective>> {
        Ok(Box::new(Mpi::new()?))
    }

    /// [`Mpi::init`], unboxed (NCCL's ranks meet through it).
    pub(super) fn new() -> Result<Mpi> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| comm_error("MPI was already initialised in this process"))?;
        Ok(Mpi {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// Rank 0's bytes on every rank.
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    pub(super) fn broadcast_bytes(&self, buf: &mut [u8]) {
        self.world.process_at_rank(0).broadcast_into(buf);
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn broadcast(&mut self, buf: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn reduce_scatter_sum(
        &mut self,
        buf: &[f32],
        counts: &[usize],
        mine: &mut [f32],
    ) -> Result<()> {
        // One reduce to each owner, in rank order on every rank: a bucket most often has one
        // owner, and a reduce to it moves half what an all-reduce does (MPI_Reduce_scatter
        // with unequal counts reduces at one rank and scatters from it).
        let mut at = 0;
        for (r, &n) in counts.iter().enumerate() {
            let part = &buf[at..at + n];
            at += n;
            if n == 0 {
                continue;
            }
            let root = self.world.process_at_rank(r as mpi::topology::Rank);
            if r == self.rank() {
                root.reduce_into_root(part, &mut *mine, SystemOperation::sum());
            } else {
                root.reduce_into(part, SystemOperation::sum());
            }
        }
        Ok(())
    }

    fn all_gather(&mut self, mine: &[f32], counts: &[usize], all: &mut [f32]) -> Result<()> {
        let c = counts_of(counts, self.size())?;
        let displs = displacements(&c)?;
        let mut part = PartitionMut::new(all, &c[..], &displs[..]);
        self.world.all_gather_varcount_into(mine, &mut part);
        Ok(())
    }

    fn gather_bytes(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let root = self.world.process_at_rank(0);
        let n = Count::try_from(mine.len())
            .map_err(|_| comm_error("a rank's state is over 2 GiB: too large to gather"))?;
        if self.rank() != 0 {
            root.gather_into(&n);
            root.gather_varcount_into(mine);
            return Ok(Vec::new());
        }
        let mut c = vec![0 as Count; self.size()];
        root.gather_into_root(&n, &mut c[..]);
        let displs = displacements(&c)?;
        let total = c.iter().map(|&x| x as usize).sum();
        let mut all = vec![0u8; total];
        let mut part = PartitionMut::new(&mut all[..], &c[..], &displs[..]);
        root.gather_varcount_into_root(mine, &mut part);
        Ok(c.iter()
            .zip(&displs)
            .map(|(&n, &d)| all[d as usize..(d + n) as usize].to_vec())
            .collect())
    }
}

/// Per-rank counts as MPI's `int`s, one per rank.
fn counts_of(counts: &[usize], size: usize) -> Result<Vec<Count>> {
    if counts.len() != size {
        return Err(comm_error(format!(
            "{} counts for {size} ranks",
            counts.len()
        )));
    }
    counts
        .iter()
        .map(|&n| Count::try_from(n).map_err(|_| comm_error("a part of over 2³¹ values")))
        .collect()
}

/// Where each rank's part starts.
fn displacements(counts: &[Count]) -> Result<Vec<Count>> {
    let mut at: Count = 0;
    counts
        .iter()
        .map(|&n| {
            let d = at;
            at = at
                .checked_add(n)
                .ok_or_else(|| comm_error("a message of over 2³¹ values"))?;
            Ok(d)
        })
        .collect()
}
