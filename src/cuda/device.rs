//! One CUDA device: context, stream, and the kernel modules compiled for it (once each).

use super::kernels::{KernelSource, compile_ptx};
use super::{require_driver, require_nvrtc};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Error {
        Error::cuda("driver", e)
    }
}

/// A device with its stream and module cache.
pub struct Gpu {
    /// The context.
    pub ctx: Arc<CudaContext>,
    /// The stream every launch goes to.
    pub stream: Arc<CudaStream>,
    arch: &'static str,
    ordinal: usize,
    modules: RefCell<HashMap<&'static str, Arc<CudaModule>>>,
}

impl Gpu {
    /// Opens device `ordinal`: a typed error when the driver, NVRTC or a device is missing.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        require_driver()?;
        require_nvrtc()?;
        let count = CudaContext::device_count().map_err(Error::from)?;
        if count as usize <= ordinal {
            return Err(Error::Cuda {
                op: "driver",
                msg: "no CUDA device".into(),
                source: None,
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(Error::from)?;
        let (major, _) = ctx.compute_capability().map_err(Error::from)?;
        let arch = if major >= 9 { "sm_90" } else { "sm_80" };
        Ok(Gpu {
            stream: ctx.default_stream(),
            ctx,
            arch,
            ordinal,
            modules: RefCell::new(HashMap::new()),
        })
    }

    /// The device's number (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The architecture kernels are compiled for.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// Entry point `name` of kernel family `k`, compiling the family on first use.
    pub fn function(&self, k: &KernelSource, name: &str) -> Result<CudaFunction> {
        let module = match self.modules.borrow().get(k.file) {
            Some(m) => m.clone(),
            None => {
                let ptx = compile_ptx(k, self.arch)?;
                self.ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(Error::from)?
            }
        };
        self.modules.borrow_mut().insert(k.file, module.clone());
        module.load_function(name).map_err(Error::from)
    }

    /// Waits for the stream.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(Error::from)
    }
}
