//! MPI as the transport: the C library through the `mpi` crate, initialised on the
//! communication thread (every call stays on it: MPI's "funneled" level suffices).

use super::{Collective, comm_error};
use mpi::collective::SystemOperation;
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
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| comm_error("MPI was already initialised in this process"))?;
        Ok(Box::new(Mpi {
            world: universe.world(),
            _universe: universe,
        }))
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
}
