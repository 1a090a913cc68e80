//! Launching `kernels/adam8bit.cu`: one thread block per 256-element quantization block.

use super::device::Gpu;
use super::kernels::SOURCES;
use crate::error::{Error, Result};
use crate::optim::BLOCK;
use crate::optim::quant::CodeMap;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Device-resident parameter, gradient and 8-bit state of one tensor.
pub struct DeviceAdam8bit {
    /// fp32 master weights.
    pub p: CudaSlice<f32>,
    /// Gradients (f32).
    pub g: CudaSlice<f32>,
    /// Signed-map codes of m.
    pub qm: CudaSlice<u8>,
    /// Unsigned-map codes of v.
    pub qv: CudaSlice<u8>,
    /// Per-block absmax of m.
    pub absmax_m: CudaSlice<f32>,
    /// Per-block max of v.
    pub absmax_v: CudaSlice<f32>,
    /// The two maps.
    pub code_m: CudaSlice<f32>,
    /// The unsigned map.
    pub code_v: CudaSlice<f32>,
}

/// One block per 256 elements.
pub fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n.div_ceil(BLOCK)).max(1) as u32, 1, 1),
        block_dim: (BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl DeviceAdam8bit {
    /// Uploads a parameter and gradient with fresh state (codes of 0, absmax 0).
    pub fn new(gpu: &Gpu, p: &[f32], g: &[f32]) -> Result<DeviceAdam8bit> {
        let st = &gpu.stream;
        let (qmap, vmap) = (CodeMap::signed(), CodeMap::unsigned());
        let blocks = p.len().div_ceil(BLOCK);
        Ok(DeviceAdam8bit {
            p: st.clone_htod(p).map_err(Error::from)?,
            g: st.clone_htod(g).map_err(Error::from)?,
            qm: st
                .clone_htod(&vec![qmap.zero_code(); p.len()])
                .map_err(Error::from)?,
            qv: st
                .clone_htod(&vec![vmap.zero_code(); p.len()])
                .map_err(Error::from)?,
            absmax_m: st.alloc_zeros::<f32>(blocks).map_err(Error::from)?,
            absmax_v: st.alloc_zeros::<f32>(blocks).map_err(Error::from)?,
            code_m: st.clone_htod(&qmap.codes).map_err(Error::from)?,
            code_v: st.clone_htod(&vmap.codes).map_err(Error::from)?,
        })
    }

    /// One AdamW step (`c1 = lr/(1−β₁ᵗ)`, `c2 = 1/√(1−β₂ᵗ)`, `decay = 1 − lr·wd`).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        gpu: &Gpu,
        b1: f32,
        b2: f32,
        eps: f32,
        c1: f32,
        c2: f32,
        decay: f32,
    ) -> Result<()> {
        let f = gpu.function(&SOURCES[2], "adam8bit_step_f32")?;
        let n = self.p.len() as i64;
        let mut l = gpu.stream.launch_builder(&f);
        l.arg(&mut self.p)
            .arg(&self.g)
            .arg(&mut self.qm)
            .arg(&mut self.qv)
            .arg(&mut self.absmax_m)
            .arg(&mut self.absmax_v);
        l.arg(&self.code_m)
            .arg(&self.code_v)
            .arg(&n)
            .arg(&b1)
            .arg(&b2)
            .arg(&eps)
            .arg(&c1)
            .arg(&c2)
            .arg(&decay);
        let cfg = grid(n as usize);
        // SAFETY: matches adam8bit_step_f32's signature; p, g, qm, qv hold n elements, the absmax
        // buffers one per 256-element block, the maps 256 codes; one block per quantization block.
        unsafe { l.launch(cfg) }.map_err(Error::from)?;
        Ok(())
    }
}
