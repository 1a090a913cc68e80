//! NCCL as the transport (feature `nccl`): the same buckets and ZeRO-1 shards as MPI, each
//! collective copying its host buffer to this rank's GPU, running there and copying back (the
//! engine's tensors live on the CPU). NCCL has no collectives with per-rank counts, so a
//! reduce-scatter or all-gather pads every rank's part to the largest; a gather to rank 0 is
//! an all-gather. Ranks meet through MPI (rank 0 makes the NCCL id, MPI broadcasts it); a
//! process alone needs no MPI.

#[cfg(feature = "mpi")]
use super::mpi::Mpi;
use super::{Collective, comm_error, launched_size};
use cudarc::driver::{CudaContext, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use rewind::error::Result;
use std::sync::Arc;

/// One NCCL rank on one GPU.
pub(super) struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    rank: usize,
    size: usize,
    /// Kept initialised for the job's length (it introduced the ranks).
    #[cfg(feature = "mpi")]
    _mpi: Option<Mpi>,
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> rewind::Error {
    comm_error(format!("NCCL {what}: {e:?}"))
}

impl Nccl {
    /// This process's rank on GPU (local rank mod the devices), the job's ranks introduced
    /// through MPI when the launcher started more than one.
    pub(super) fn init() -> Result<Box<dyn Collective>> {
        Ok(Box::new(Nccl::new()?))
    }

    fn new() -> Result<Nccl> {
        // SAFETY: only probe whether the shared libraries can be opened (cudarc panics on
        // a missing one at first use).
        let (driver, nccl) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nccl::sys::is_culib_present(),
            )
        };
        if !driver || !nccl {
            return Err(comm_error(
                "--dist-backend nccl needs the CUDA driver and libnccl (not found)",
            ));
        }
        let size = launched_size().unwrap_or(1);
        #[cfg(feature = "mpi")]
        let (rank, id, mpi) = if size > 1 {
            let mpi = Mpi::new()?;
            let rank = mpi.rank();
            let mut bytes = [0u8; 128];
            if rank == 0 {
                let id = Id::new().map_err(|e| nccl_error("id", e))?;
                for (b, c) in bytes.iter_mut().zip(id.internal()) {
                    *b = *c as u8;
                }
            }
            mpi.broadcast_bytes(&mut bytes);
            let id = Id::uninit(bytes.map(|b| b as std::ffi::c_char));
            (rank, id, Some(mpi))
        } else {
            (0, Id::new().map_err(|e| nccl_error("id", e))?, None)
        };
        #[cfg(not(feature = "mpi"))]
        let (rank, id) = if size > 1 {
            return Err(comm_error(
                "NCCL's ranks meet through MPI: build with --features nccl,mpi",
            ));
        } else {
            (0, Id::new().map_err(|e| nccl_error("id", e))?)
        };
        let devices = CudaContext::device_count().map_err(|e| nccl_error("devices", e))?;
        if devices < 1 {
            return Err(comm_error("--dist-backend nccl: no CUDA device"));
        }
        let local: usize = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse().ok())
            .unwrap_or(rank);
        let ctx =
            CudaContext::new(local % devices as usize).map_err(|e| nccl_error("device", e))?;
        let stream = ctx.default_stream();
        let comm = Comm::from_rank(stream.clone(), rank, size, id)
            .map_err(|e| nccl_error("communicator", e))?;
        Ok(Nccl {
            comm,
            stream,
            rank,
            size,
            #[cfg(feature = "mpi")]
            _mpi: mpi,
        })
    }

    /// `host` on the device.
    fn up<T: DeviceRepr>(&self, host: &[T]) -> Result<cudarc::driver::CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(|e| nccl_error("copy to the device", e))
    }

    /// A device buffer back on the host, once the stream has finished.
    fn down<T: DeviceRepr>(&self, dev: &cudarc::driver::CudaSlice<T>) -> Result<Vec<T>> {
        let v = self
            .stream
            .clone_dtoh(dev)
            .map_err(|e| nccl_error("copy to the host", e))?;
        self.stream
            .synchronize()
            .map_err(|e| nccl_error("synchronize", e))?;
        Ok(v)
    }

    /// Sums `buf` over the ranks in place.
    fn sum<T: DeviceRepr + NcclType + Copy>(&self, buf: &mut [T]) -> Result<()> {
        let mut d = self.up(buf)?;
        self.comm
            .all_reduce_in_place(&mut d, &ReduceOp::Sum)
            .map_err(|e| nccl_error("all-reduce", e))?;
        buf.copy_from_slice(&self.down(&d)?);
        Ok(())
    }

    /// Every rank's `mine`, each padded to the longest, concatenated in rank order.
    fn gather_padded<T: DeviceRepr + NcclType + ValidAsZeroBits + Default + Clone>(
        &self,
        mine: &[T],
        longest: usize,
    ) -> Result<Vec<T>> {
        let mut padded = mine.to_vec();
        padded.resize(longest, T::default());
        let send = self.up(&padded)?;
        let mut all = self
            .stream
            .alloc_zeros::<T>(longest * self.size)
            .map_err(|e| nccl_error("allocate", e))?;
        self.comm
            .all_gather(&send, &mut all)
            .map_err(|e| nccl_error("all-gather", e))?;
        self.down(&all)
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        self.sum(buf)
    }

    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf)
    }

    fn broadcast(&mut self, buf: &mut [f32]) -> Result<()> {
        let mut d = self.up(buf)?;
        self.comm
            .broadcast_in_place(&mut d, 0)
            .map_err(|e| nccl_error("broadcast", e))?;
        buf.copy_from_slice(&self.down(&d)?);
        Ok(())
    }

    fn reduce_scatter_sum(
        &mut self,
        buf: &[f32],
        counts: &[usize],
        mine: &mut [f32],
    ) -> Result<()> {
        let longest = counts.iter().copied().max().unwrap_or(0);
        let mut padded = vec![0f32; longest * self.size];
        let mut at = 0;
        for (r, &n) in counts.iter().enumerate() {
            padded[r * longest..r * longest + n].copy_from_slice(&buf[at..at + n]);
            at += n;
        }
        let send = self.up(&padded)?;
        let mut part = self
            .stream
            .alloc_zeros::<f32>(longest)
            .map_err(|e| nccl_error("allocate", e))?;
        self.comm
            .reduce_scatter(&send, &mut part, &ReduceOp::Sum)
            .map_err(|e| nccl_error("reduce-scatter", e))?;
        let v = self.down(&part)?;
        mine.copy_from_slice(&v[..mine.len()]);
        Ok(())
    }

    fn all_gather(&mut self, mine: &[f32], counts: &[usize], all: &mut [f32]) -> Result<()> {
        let longest = counts.iter().copied().max().unwrap_or(0);
        let padded = self.gather_padded(mine, longest)?;
        let mut at = 0;
        for (r, &n) in counts.iter().enumerate() {
            all[at..at + n].copy_from_slice(&padded[r * longest..r * longest + n]);
            at += n;
        }
        Ok(())
    }

    fn gather_bytes(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let lens = self.gather_padded(&[mine.len() as u64], 1)?;
        let longest = lens.iter().copied().max().unwrap_or(0) as usize;
        let all = self.gather_padded(mine, longest)?;
        if self.rank != 0 {
            return Ok(Vec::new());
        }
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| all[r * longest..r * longest + n as usize].to_vec())
            .collect())
    }
}
