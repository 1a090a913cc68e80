//! Data parallelism: N ranks each take their share of a step's micro-batches and sum their
//! gradients in buckets while the backward runs — a bucket's all-reduce starts on a
//! communication thread as soon as the engine's gradient-ready event
//! (`BackwardOptions::on_grad_ready`) has reported its last parameter — so every rank holds
//! the same summed gradient and takes the same optimizer step. The transport is MPI
//! (`mpirun -np N rewind train …`, the `mpi` feature); the engine knows nothing of it.

mod buckets;
#[cfg(feature = "mpi")]
mod mpi;
mod shards;
mod zero;

pub use buckets::{BucketSizes, CommTimes, Reducer};
pub use shards::{Piece, Shards};

use rewind::error::{Error, Result};

/// What a transport provides, called on the communication thread only (MPI's calls stay on
/// the thread that initialised it).
pub trait Collective {
    /// This process's rank, 0..size.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn size(&self) -> usize;
    /// Sums `buf` over the ranks, in place, on every rank.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// Sums `buf` over the ranks, in place, on every rank (statistics: losses, token counts).
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
    /// Rank 0's `buf` on every rank.
    fn broadcast(&mut self, buf: &mut [f32]) -> Result<()>;
    /// Sums `buf` over the ranks and returns this rank's part of the sum: rank r's is the
    /// `counts[r]` values after the lower ranks' parts (MPI's `Reduce_scatter`).
    fn reduce_scatter_sum(&mut self, buf: &[f32], counts: &[usize]) -> Result<Vec<f32>>;
    /// Every rank's `mine` (rank r's holding `counts[r]` values), concatenated in rank order.
    fn all_gather(&mut self, mine: &[f32], counts: &[usize]) -> Result<Vec<f32>>;
    /// Every rank's `mine` on rank 0, in rank order (the other ranks get an empty list).
    fn gather_bytes(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
}

/// Ranks in the job the launcher started this process in (Open MPI's or MPICH's environment),
/// `None` when no launcher did.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .and_then(|s| s.parse().ok())
}

/// The reducer for a process `mpirun` started (`None`: a single process), its buckets sized
/// by `sizes`.
pub fn from_launcher(sizes: BucketSizes) -> Result<Option<Reducer>> {
    match launched_size() {
        None | Some(1) => Ok(None),
        #[cfg(feature = "mpi")]
        Some(_) => Reducer::start(sizes, Box::new(mpi::Mpi::init)).map(Some),
        #[cfg(not(feature = "mpi"))]
        Some(n) => {
            let _ = sizes;
            Err(Error::invalid(
                "train",
                format!(
                    "started as one of {n} ranks, but this rewind was built without the `mpi` feature (cargo build --release --features mpi)"
                ),
            ))
        }
    }
}

/// A transport error as the lab's error.
pub(crate) fn comm_error(what: impl std::fmt::Display) -> Error {
    Error::invalid("dist", what.to_string())
}

/// Makes a panic in this rank print which rank it was and abort the process, so the launcher
/// ends the job instead of the other ranks waiting on a collective.
pub fn abort_on_panic(rank: usize, size: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("rank {rank} of {size} panicked:");
        previous(info);
        std::process::abort();
    }));
}
