//! Launching `kernels/hgemm.cu`: C = op(A)·op(B), f16 in, f32 accumulate, f32 or f16 out.

use super::device::Gpu;
use super::kernels::SOURCES;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use half::f16;

/// Block tile and threads of the kernel (must match hgemm.cu).
pub const BM: u32 = 128;
/// Block tile width.
pub const BN: u32 = 128;
/// Threads per block.
pub const THREADS: u32 = 256;
/// Dynamic shared memory: 3 stages of a 128×40 A tile and a 32×136 B tile of halves.
pub const SMEM_BYTES: u32 = 3 * (128 * 40 + 32 * 136) * 2;

/// Which operands are stored transposed: `Nn` `A[M,K]·B[K,N]`; `Nt` B stored `[N,K]` (dA = G·Bᵀ);
/// `Tn` A stored `[K,M]` (dB = Aᵀ·G).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Neither transposed.
    Nn,
    /// B transposed.
    Nt,
    /// A transposed.
    Tn,
}

/// The launch grid for an M×N output: one block per 128×128 tile.
pub fn grid(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            (n as u32).div_ceil(BN).max(1),
            (m as u32).div_ceil(BM).max(1),
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: SMEM_BYTES,
    }
}

fn entry(layout: Layout, f16_out: bool) -> &'static str {
    match (layout, f16_out) {
        (Layout::Nn, false) => "hgemm_nn_f32",
        (Layout::Nn, true) => "hgemm_nn_f16",
        (Layout::Nt, false) => "hgemm_nt_f32",
        (Layout::Nt, true) => "hgemm_nt_f16",
        (Layout::Tn, false) => "hgemm_tn_f32",
        (Layout::Tn, true) => "hgemm_tn_f16",
    }
}

/// `C[M,N]` (f32) = op(A)·op(B) on device buffers.
#[allow(clippy::too_many_arguments)] // the BLAS signature: device, operands, sizes, layout
pub fn hgemm_f32(
    gpu: &Gpu,
    a: &CudaSlice<f16>,
    b: &CudaSlice<f16>,
    c: &mut CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
) -> Result<()> {
    launch(gpu, a, b, c, (m, n, k), layout, false)
}

/// `C[M,N]` (f16, rounded once from the f32 accumulator) = op(A)·op(B) on device buffers.
#[allow(clippy::too_many_arguments)] // the BLAS signature: device, operands, sizes, layout
pub fn hgemm_f16(
    gpu: &Gpu,
    a: &CudaSlice<f16>,
    b: &CudaSlice<f16>,
    c: &mut CudaSlice<f16>,
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
) -> Result<()> {
    launch(gpu, a, b, c, (m, n, k), layout, true)
}

fn launch<T: DeviceRepr>(
    gpu: &Gpu,
    a: &CudaSlice<f16>,
    b: &CudaSlice<f16>,
    c: &mut CudaSlice<T>,
    (m, n, k): (usize, usize, usize),
    layout: Layout,
    f16_out: bool,
) -> Result<()> {
    if a.len() < m * k || b.len() < k * n || c.len() < m * n {
        return Err(Error::invalid(
            "hgemm",
            "a device buffer is smaller than its matrix",
        ));
    }
    let f = gpu.function(&SOURCES[0], entry(layout, f16_out))?;
    f.set_attribute(
        cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        SMEM_BYTES as i32,
    )
    .map_err(Error::from)?;
    let (mi, ni, ki) = (m as i32, n as i32, k as i32);
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(a).arg(b).arg(c).arg(&mi).arg(&ni).arg(&ki);
    // SAFETY: the argument list matches hgemm_*_f32(const half*, const half*, float*, int, int,
    // int) and hgemm_*_f16(const half*, const half*, half*, int, int, int), the entry chosen by
    // `f16_out` as T is f32 or f16; the buffers hold at least M·K, K·N and M·N elements
    // (checked above), and the grid covers C exactly once.
    unsafe { launch.launch(grid(m, n)) }.map_err(Error::from)?;
    Ok(())
}

/// Host convenience: copies A, B in, multiplies, copies C back.
pub fn hgemm_host(
    gpu: &Gpu,
    a: &[f16],
    b: &[f16],
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
) -> Result<Vec<f32>> {
    let s = &gpu.stream;
    let (da, db) = (
        s.clone_htod(a).map_err(Error::from)?,
        s.clone_htod(b).map_err(Error::from)?,
    );
    let mut dc = s.alloc_zeros::<f32>(m * n).map_err(Error::from)?;
    hgemm_f32(gpu, &da, &db, &mut dc, m, n, k, layout)?;
    s.clone_dtoh(&dc).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_odd_sizes_with_one_block_per_tile() {
        let g = grid(300, 129);
        assert_eq!(g.grid_dim, (2, 3, 1));
        assert_eq!(g.block_dim, (256, 1, 1));
        assert_eq!(grid(0, 0).grid_dim, (1, 1, 1));
        const {
            assert!(
                SMEM_BYTES > 48 * 1024,
                "needs the dynamic shared memory opt-in"
            )
        };
    }
}
