//! Data parallelism: N ranks each take their share of a step's micro-batches and sum their
//! gradients in buckets while the backward runs — a bucket's all-reduce starts on a
//! communication thread as soon as the engine's gradient-ready event
//! (`BackwardOptions::on_grad_ready`) has reported its last parameter — so every rank holds
//! the same summed gradient and takes the same optimizer step. The transport is MPI
//! (`mpirun -np N rewind train …`, the `mpi` feature); the engine knows nothing of it.

mod buckets;
mod comm;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
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
    /// Sums `buf` over the ranks into `mine`, this rank's part of the sum: rank r's is the
    /// `counts[r]` values after the lower ranks' parts (MPI's `Reduce_scatter`). The caller
    /// has checked the lengths: one count per rank, adding up to `buf`, `mine` this rank's.
    fn reduce_scatter_sum(&mut self, buf: &[f32], counts: &[usize], mine: &mut [f32])
    -> Result<()>;
    /// Every rank's `mine` (rank r's holding `counts[r]` values), concatenated in rank order
    /// into `all` (lengths checked by the caller, as for `reduce_scatter_sum`).
    fn all_gather(&mut self, mine: &[f32], counts: &[usize], all: &mut [f32]) -> Result<()>;
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

/// Which transport carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// MPI on the CPUs (feature `mpi`).
    #[default]
    Mpi,
    /// NCCL on each rank's GPU, the buffers copied there and back (feature `nccl`).
    Nccl,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "mpi" => Ok(Backend::Mpi),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(format!("{s:?} is not a backend: mpi or nccl")),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
        })
    }
}

impl Backend {
    /// Starts this rank's reducer on the transport (a process no launcher started is the one
    /// rank of a job of one).
    pub fn start(self, sizes: BucketSizes) -> Result<Reducer> {
        let built = |feature: &str| {
            Error::invalid(
                "train",
                format!(
                    "--dist-backend {self} needs the `{feature}` feature (cargo build --release --features {feature})"
                ),
            )
        };
        match self {
            #[cfg(feature = "mpi")]
            Backend::Mpi => Reducer::start(sizes, Box::new(mpi::Mpi::init)),
            #[cfg(feature = "nccl")]
            Backend::Nccl => Reducer::start(sizes, Box::new(nccl::Nccl::init)),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = sizes;
                Err(built(match self {
                    Backend::Mpi => "mpi",
                    Backend::Nccl => "nccl",
                }))
            }
        }
    }
}

/// The reducer for a process a launcher (`mpirun`) started, on `backend` (`None`: a single
/// process), its buckets sized by `sizes`.
pub fn from_launcher(sizes: BucketSizes, backend: Backend) -> Result<Option<Reducer>> {
    match launched_size() {
        None | Some(1) => Ok(None),
        Some(_) => backend.start(sizes).map(Some),
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
