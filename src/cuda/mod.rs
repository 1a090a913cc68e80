//! The CUDA seam (feature `cuda`): kernels in `kernels/*.cu`, compiled by NVRTC once per
//! device and launched through `cudarc`. cudarc panics when a CUDA library is missing, so every
//! entry point first checks that the library is there and returns a typed error instead.

pub mod adam8bit;
pub mod buffer;
pub mod device;
pub mod hgemm;
pub mod kernels;
pub mod loss_scale;

pub use buffer::CudaBuffer;
pub use device::Gpu;

use crate::error::{Error, Result};

/// Fails with a clear message unless NVRTC can be loaded.
pub fn require_nvrtc() -> Result<()> {
    // SAFETY: only probes whether the shared library can be opened.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Cuda {
            op: "nvrtc",
            msg: "NVRTC not found: install the CUDA toolkit or run scripts/cuda-tools.sh and put its lib folder on LD_LIBRARY_PATH".into(),
            source: None,
        })
    }
}

/// Fails with a clear message unless the CUDA driver can be loaded.
pub fn require_driver() -> Result<()> {
    // SAFETY: only probes whether the shared library can be opened.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Cuda {
            op: "driver",
            msg: "no CUDA driver found".into(),
            source: None,
        })
    }
}
