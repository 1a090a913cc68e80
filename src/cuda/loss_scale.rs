//! Launching `kernels/loss_scale.cu`: fused multi-tensor unscale with a found-inf flag, and the
//! scale update with its growth tracker on the device.

use super::device::Gpu;
use super::kernels::SOURCES;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Element offsets of each tensor in the concatenated index space (prefix sums), and the total.
pub fn offsets(lens: &[usize]) -> (Vec<i64>, i64) {
    let mut acc = 0i64;
    let offs = lens
        .iter()
        .map(|&n| {
            let o = acc;
            acc += n as i64;
            o
        })
        .collect();
    (offs, acc)
}

/// Grid for `total` elements: 256-thread blocks, at most 4 blocks per element chunk of 1024.
pub fn grid(total: i64) -> LaunchConfig {
    let blocks = ((total.max(1) as u64).div_ceil(1024)).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Device state of a scaler.
pub struct DeviceScaler {
    /// The scale (one f32).
    pub scale: CudaSlice<f32>,
    /// 1/scale, recomputed on the host each step as PyTorch does (f64 reciprocal rounded to f32).
    pub inv_scale: CudaSlice<f32>,
    /// Consecutive clean steps.
    pub growth_tracker: CudaSlice<i32>,
    /// Set to 1 by unscale when a value is inf/NaN.
    pub found_inf: CudaSlice<i32>,
}

/// Unscales every gradient buffer in place in one launch; returns whether any value was
/// inf/NaN (the one host sync PyTorch also makes to decide whether to skip the step).
pub fn unscale(
    gpu: &Gpu,
    grads: &mut [&mut CudaSlice<f32>],
    s: &mut DeviceScaler,
    scale_host: f32,
) -> Result<bool> {
    let st = &gpu.stream;
    let inv = (1.0f64 / scale_host as f64) as f32;
    st.memcpy_htod(&[inv], &mut s.inv_scale)
        .map_err(Error::from)?;
    st.memcpy_htod(&[0i32], &mut s.found_inf)
        .map_err(Error::from)?;
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    let (offs, total) = offsets(&lens);
    let ptrs: Vec<u64> = grads
        .iter_mut()
        .map(|g| {
            use cudarc::driver::DevicePtrMut;
            let (p, _sync) = g.device_ptr_mut(st);
            p
        })
        .collect();
    let dptrs = st.clone_htod(&ptrs).map_err(Error::from)?;
    let doffs = st.clone_htod(&offs).map_err(Error::from)?;
    let f = gpu.function(&SOURCES[1], "unscale_found_inf_f32")?;
    let n = grads.len() as i32;
    let mut l = st.launch_builder(&f);
    l.arg(&dptrs)
        .arg(&doffs)
        .arg(&n)
        .arg(&total)
        .arg(&s.inv_scale)
        .arg(&mut s.found_inf);
    // SAFETY: matches unscale_found_inf_f32(float* const*, const long long*, int, long long,
    // const float*, int*); every pointer addresses a live gradient buffer of the length its
    // offset range says, and the kernel's grid-stride loop stays below `total`.
    unsafe { l.launch(grid(total)) }.map_err(Error::from)?;
    let found = st.clone_dtoh(&s.found_inf).map_err(Error::from)?;
    Ok(found[0] != 0)
}

impl DeviceScaler {
    /// Fresh state on `gpu` at `scale`.
    pub fn new(gpu: &Gpu, scale: f32) -> Result<DeviceScaler> {
        let st = &gpu.stream;
        Ok(DeviceScaler {
            scale: st.clone_htod(&[scale])?,
            inv_scale: st.alloc_zeros::<f32>(1)?,
            growth_tracker: st.alloc_zeros::<i32>(1)?,
            found_inf: st.alloc_zeros::<i32>(1)?,
        })
    }
}

/// [`GradScaler`](crate::amp::GradScaler)'s device path: the f32 gradients `grads` (tensors on
/// one CUDA device) unscaled in place by one launch at `scale`; whether any was inf/NaN.
pub(crate) fn unscale_tensors(grads: &[crate::Tensor], scale: f32) -> Result<bool> {
    use crate::backend::{Data, Side};
    use crate::cuda::CudaBuffer;
    let op = "GradScaler";
    let mut guards = Vec::with_capacity(grads.len());
    for g in grads {
        guards.push(g.storage().try_borrow_mut().ok_or_else(|| {
            Error::invalid(op, "a gradient's data is borrowed; drop the guard first")
        })?);
    }
    let mut bufs: Vec<&mut CudaBuffer> = guards
        .iter_mut()
        .map(|d| Side::<CudaBuffer>::side_mut(&mut **d as &mut Data, op))
        .collect::<Result<_>>()?;
    let Some(gpu) = bufs.first().map(|b| b.gpu().clone()) else {
        return Ok(false);
    };
    let mut slices: Vec<&mut CudaSlice<f32>> = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut().filter(|b| b.len() > 0) {
        if b.gpu().ordinal() != gpu.ordinal() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: format!("cuda:{}", gpu.ordinal()),
                rhs: format!("cuda:{}", b.gpu().ordinal()),
            });
        }
        slices.push(b.f32_mut(op)?);
    }
    let mut s = DeviceScaler::new(&gpu, scale)?;
    unscale(&gpu, &mut slices, &mut s, scale)
}

/// The scale update on the device.
pub fn update(
    gpu: &Gpu,
    s: &mut DeviceScaler,
    growth: f32,
    backoff: f32,
    interval: i32,
) -> Result<()> {
    let f = gpu.function(&SOURCES[1], "update_scale")?;
    let mut l = gpu.stream.launch_builder(&f);
    l.arg(&mut s.scale)
        .arg(&mut s.growth_tracker)
        .arg(&s.found_inf)
        .arg(&growth)
        .arg(&backoff)
        .arg(&interval);
    // SAFETY: matches update_scale(float*, int*, const int*, float, float, int); one thread
    // touches three one-element buffers.
    unsafe {
        l.launch(LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        })
    }
    .map_err(Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_are_prefix_sums() {
        assert_eq!(super::offsets(&[3, 0, 5]), (vec![0, 3, 3], 8));
        assert_eq!(super::grid(5000).grid_dim, (5, 1, 1));
    }
}
