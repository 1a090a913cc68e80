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
        let mut m = Moments {
            qm: &mut self.qm,
            qv: &mut self.qv,
            absmax_m: &mut self.absmax_m,
            absmax_v: &mut self.absmax_v,
            code_m: &self.code_m,
            code_v: &self.code_v,
        };
        launch(
            gpu,
            &mut self.p,
            &self.g,
            &mut m,
            [b1, b2, eps, c1, c2, decay],
        )
    }
}

/// The 8-bit state a step reads and writes, and the two maps.
struct Moments<'a> {
    qm: &'a mut CudaSlice<u8>,
    qv: &'a mut CudaSlice<u8>,
    absmax_m: &'a mut CudaSlice<f32>,
    absmax_v: &'a mut CudaSlice<f32>,
    code_m: &'a CudaSlice<f32>,
    code_v: &'a CudaSlice<f32>,
}

/// One launch of `adam8bit_step_f32` over `p` and `g` with `[b1, b2, eps, c1, c2, decay]`.
fn launch(
    gpu: &Gpu,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    m: &mut Moments<'_>,
    [b1, b2, eps, c1, c2, decay]: [f32; 6],
) -> Result<()> {
    let n = p.len();
    if g.len() != n
        || m.qm.len() != n
        || m.qv.len() != n
        || m.absmax_m.len() < n.div_ceil(BLOCK)
        || m.absmax_v.len() < n.div_ceil(BLOCK)
    {
        return Err(Error::invalid(
            "adam8bit",
            "parameter, gradient and state lengths differ",
        ));
    }
    let f = gpu.function(&SOURCES[2], "adam8bit_step_f32")?;
    let n = n as i64;
    let mut l = gpu.stream.launch_builder(&f);
    l.arg(&mut *p)
        .arg(g)
        .arg(&mut *m.qm)
        .arg(&mut *m.qv)
        .arg(&mut *m.absmax_m)
        .arg(&mut *m.absmax_v);
    l.arg(m.code_m)
        .arg(m.code_v)
        .arg(&n)
        .arg(&b1)
        .arg(&b2)
        .arg(&eps)
        .arg(&c1)
        .arg(&c2)
        .arg(&decay);
    let cfg = grid(n as usize);
    // SAFETY: matches adam8bit_step_f32's signature; p, g, qm, qv hold n elements (checked
    // above), the absmax buffers one per 256-element block, the maps 256 codes; one block per
    // quantization block.
    unsafe { l.launch(cfg) }.map_err(Error::from)?;
    Ok(())
}

/// Codes of m and v and their per-block absmax, on the host.
pub(crate) type HostMoments = (Vec<u8>, Vec<u8>, Vec<f32>, Vec<f32>);

/// The 8-bit moments of a parameter that lives on the device ([`crate::optim::AdamW8bit`]'s
/// device path): codes, per-block absmax and the maps, kept there between steps.
pub struct DeviceMoments {
    gpu: std::rc::Rc<Gpu>,
    qm: CudaSlice<u8>,
    qv: CudaSlice<u8>,
    absmax_m: CudaSlice<f32>,
    absmax_v: CudaSlice<f32>,
    code_m: CudaSlice<f32>,
    code_v: CudaSlice<f32>,
}

impl std::fmt::Debug for DeviceMoments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceMoments(cuda:{}, {} elements)",
            self.gpu.ordinal(),
            self.qm.len()
        )
    }
}

impl DeviceMoments {
    /// The host state (codes of m and v, their absmax) uploaded to `gpu`.
    pub(crate) fn upload(
        gpu: &std::rc::Rc<Gpu>,
        (m, v, am, av): (&[u8], &[u8], &[f32], &[f32]),
    ) -> Result<DeviceMoments> {
        let st = &gpu.stream;
        let (qmap, vmap) = (CodeMap::signed(), CodeMap::unsigned());
        Ok(DeviceMoments {
            gpu: gpu.clone(),
            qm: st.clone_htod(m)?,
            qv: st.clone_htod(v)?,
            absmax_m: st.clone_htod(am)?,
            absmax_v: st.clone_htod(av)?,
            code_m: st.clone_htod(&qmap.codes)?,
            code_v: st.clone_htod(&vmap.codes)?,
        })
    }

    /// A host copy: codes of m and v, their absmax.
    pub(crate) fn download(&self) -> Result<HostMoments> {
        let st = &self.gpu.stream;
        Ok((
            st.clone_dtoh(&self.qm)?,
            st.clone_dtoh(&self.qv)?,
            st.clone_dtoh(&self.absmax_m)?,
            st.clone_dtoh(&self.absmax_v)?,
        ))
    }

    /// One step of `p` (f32 on this device) from its gradient (f32, beside it), in place;
    /// `consts` = `[b1, b2, eps, c1, c2, decay]`.
    pub(crate) fn step(&mut self, p: &crate::Tensor, consts: [f32; 6]) -> Result<()> {
        use crate::backend::{Data, Side};
        use crate::cuda::CudaBuffer;
        let op = "AdamW8bit";
        let Some(grad) = p.grad() else { return Ok(()) };
        let busy = || Error::invalid(op, "the parameter's data is borrowed, or is its gradient");
        let g_data = grad.storage().borrow();
        let g: &CudaBuffer = Side::side(&*g_data as &Data, op)?;
        let mut p_data = p.storage().try_borrow_mut().ok_or_else(busy)?;
        let pb: &mut CudaBuffer = Side::side_mut(&mut *p_data as &mut Data, op)?;
        let mut m = Moments {
            qm: &mut self.qm,
            qv: &mut self.qv,
            absmax_m: &mut self.absmax_m,
            absmax_v: &mut self.absmax_v,
            code_m: &self.code_m,
            code_v: &self.code_v,
        };
        launch(&self.gpu, pb.f32_mut(op)?, g.f32_ref(op)?, &mut m, consts)?;
        drop(p_data);
        p.storage().bump_version();
        Ok(())
    }
}
