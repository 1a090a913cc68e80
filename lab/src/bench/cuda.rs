//! GPU measurements for `rewind bench --cuda` and `benches/cuda.rs`: our hgemm against cuBLAS
//! `gemm_ex` (f16 in, f32 compute, f32 out) in TFLOP/s, and the 8-bit AdamW and loss-scale
//! kernels against a device-to-device copy in GB/s. Each figure is the median of timed
//! repetitions, with the stream synchronised inside the timing.

use cudarc::cublas::{CudaBlas, sys as blas};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use half::f16;
use rewind::cuda::Gpu;
use rewind::cuda::adam8bit::DeviceAdam8bit;
use rewind::cuda::hgemm::{Layout, hgemm_f32};
use rewind::cuda::loss_scale::{DeviceScaler, unscale};
use rewind::error::{Error, Result};
use std::time::Instant;

/// Median seconds of `reps` runs of `f` (after one warm-up), synchronising after each.
pub fn median_secs(gpu: &Gpu, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    gpu.sync()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        gpu.sync()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn blas_err(e: cudarc::cublas::result::CublasError) -> Error {
    Error::cuda("cublas", e)
}

/// Fails with a clear message unless cuBLAS can be loaded (cudarc panics otherwise).
pub fn require_cublas() -> Result<()> {
    // SAFETY: only probes whether the shared library can be opened.
    if unsafe { blas::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Cuda {
            op: "cublas",
            msg: "cuBLAS not found: put the CUDA toolkit's lib64 (libcublas.so) on LD_LIBRARY_PATH"
                .into(),
            source: None,
        })
    }
}

/// One GEMM shape measured both ways.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmRow {
    /// Where the shape comes from.
    pub what: String,
    /// M, N, K.
    pub mnk: (usize, usize, usize),
    /// Our kernel, TFLOP/s.
    pub ours: f64,
    /// cuBLAS `gemm_ex`, TFLOP/s.
    pub cublas: f64,
}

/// A cuBLAS handle on the device's stream (a typed error when cuBLAS is missing).
pub fn blas(gpu: &Gpu) -> Result<CudaBlas> {
    require_cublas()?;
    CudaBlas::new(gpu.stream.clone()).map_err(blas_err)
}

/// `C[M,N] = A[M,K]·B[K,N]` (row-major, f16 in, f32 out) through cuBLAS: column-major
/// Cᵀ = Bᵀ·Aᵀ, so B is passed first.
#[allow(clippy::too_many_arguments)]
pub fn cublas_gemm(
    gpu: &Gpu,
    h: &CudaBlas,
    a: &cudarc::driver::CudaSlice<f16>,
    b: &cudarc::driver::CudaSlice<f16>,
    c: &mut cudarc::driver::CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (pa, _ra) = a.device_ptr(&gpu.stream);
    let (pb, _rb) = b.device_ptr(&gpu.stream);
    let (pc, _rc) = c.device_ptr_mut(&gpu.stream);
    // SAFETY: the handle is bound to this stream; A, B, C hold M·K, K·N, M·N elements of the
    // stated types; leading dimensions are the row lengths of the row-major matrices.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *h.handle(),
            blas::cublasOperation_t::CUBLAS_OP_N,
            blas::cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            m as i32,
            k as i32,
            &alpha as *const f32 as *const _,
            pb as *const _,
            blas::cudaDataType::CUDA_R_16F,
            n as i32,
            pa as *const _,
            blas::cudaDataType::CUDA_R_16F,
            k as i32,
            &beta as *const f32 as *const _,
            pc as *mut _,
            blas::cudaDataType::CUDA_R_32F,
            n as i32,
            blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )
    }
    .map_err(blas_err)
}

/// `len` uniform values in [−1, 1) as f16, from the engine generator seeded with `seed`.
pub fn random_f16(len: usize, seed: u64) -> Vec<f16> {
    rewind::rng::manual_seed(seed);
    rewind::rng::uniform_vec(len)
        .into_iter()
        .map(|u| f16::from_f64(2.0 * u - 1.0))
        .collect()
}

/// Our hgemm and cuBLAS on the same operands, TFLOP/s each (2·M·N·K per product).
pub fn gemm_row(
    gpu: &Gpu,
    what: &str,
    m: usize,
    n: usize,
    k: usize,
    reps: usize,
) -> Result<GemmRow> {
    let st = &gpu.stream;
    let a = st.clone_htod(&random_f16(m * k, 1)).map_err(Error::from)?;
    let b = st.clone_htod(&random_f16(k * n, 2)).map_err(Error::from)?;
    let mut c = st.alloc_zeros::<f32>(m * n).map_err(Error::from)?;
    let flops = 2.0 * (m * n * k) as f64;
    let ours = median_secs(gpu, reps, || {
        hgemm_f32(gpu, &a, &b, &mut c, m, n, k, Layout::Nn)
    })?;
    let h = blas(gpu)?;
    let theirs = median_secs(gpu, reps, || cublas_gemm(gpu, &h, &a, &b, &mut c, m, n, k))?;
    Ok(GemmRow {
        what: what.to_string(),
        mnk: (m, n, k),
        ours: flops / ours / 1e12,
        cublas: flops / theirs / 1e12,
    })
}

/// Bandwidth of the memory-bound kernels against a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct BandwidthRow {
    /// Kernel.
    pub what: &'static str,
    /// Elements per launch.
    pub elements: usize,
    /// Bytes the kernel must move per launch (reads + writes).
    pub bytes: usize,
    /// GB/s.
    pub gbps: f64,
}

/// Device-to-device copy, 8-bit AdamW (p r/w, g r, two codes r/w: 16 bytes per parameter) and
/// the fused unscale (8 bytes per gradient element) on `n` elements.
pub fn bandwidth_rows(gpu: &Gpu, n: usize, reps: usize) -> Result<Vec<BandwidthRow>> {
    let st = &gpu.stream;
    let mut rows = Vec::new();
    let row = |what, bytes: usize, secs: f64| BandwidthRow {
        what,
        elements: n,
        bytes,
        gbps: bytes as f64 / secs / 1e9,
    };
    let src = st.alloc_zeros::<f32>(n).map_err(Error::from)?;
    let mut dst = st.alloc_zeros::<f32>(n).map_err(Error::from)?;
    let secs = median_secs(gpu, reps, || {
        st.memcpy_dtod(&src, &mut dst).map_err(Error::from)
    })?;
    rows.push(row("device-to-device copy", 8 * n, secs));
    drop((src, dst));

    let p: Vec<f32> = vec![0.01; n];
    let g: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 1e-4).collect();
    let mut opt = DeviceAdam8bit::new(gpu, &p, &g)?;
    // Step 1 of lr 1e-3, weight decay 0.01, PyTorch's betas and eps.
    let (c1, c2, decay) = (
        1e-3 / (1.0 - 0.9f32),
        1.0 / (1.0 - 0.999f32).sqrt(),
        1.0 - 1e-5f32,
    );
    let secs = median_secs(gpu, reps, || opt.step(gpu, 0.9, 0.999, 1e-8, c1, c2, decay))?;
    rows.push(row("8-bit AdamW step", 16 * n, secs));
    drop(opt);

    let mut grads = [st.clone_htod(&g).map_err(Error::from)?];
    let mut s = DeviceScaler {
        scale: st.clone_htod(&[65536.0f32]).map_err(Error::from)?,
        inv_scale: st.alloc_zeros::<f32>(1).map_err(Error::from)?,
        growth_tracker: st.clone_htod(&[0i32]).map_err(Error::from)?,
        found_inf: st.alloc_zeros::<i32>(1).map_err(Error::from)?,
    };
    let secs = median_secs(gpu, reps, || {
        unscale(gpu, &mut grads.iter_mut().collect::<Vec<_>>(), &mut s, 1.0).map(|_| ())
    })?;
    rows.push(row("loss-scale unscale + found-inf", 8 * n, secs));
    Ok(rows)
}

/// GEMM shapes: 4096³ and the matmuls of `rewind train`'s default transformer (1,024 tokens,
/// d = 64, MLP 256, vocabulary 512).
pub fn gemm_shapes() -> Vec<(&'static str, usize, usize, usize)> {
    vec![
        ("4096³", 4096, 4096, 4096),
        ("train: q/k/v/o projection", 1024, 64, 64),
        ("train: MLP up", 1024, 256, 64),
        ("train: MLP down", 1024, 64, 256),
        ("train: LM head", 1024, 512, 64),
    ]
}

/// The whole table as text.
pub fn report(gpu: &Gpu, reps: usize, bandwidth_elements: usize) -> Result<String> {
    let mut s = String::from(
        "GEMM (f16 in, f32 accumulate, f32 out)   M×N×K              ours TFLOP/s  cuBLAS TFLOP/s  ours/cuBLAS\n",
    );
    for (what, m, n, k) in gemm_shapes() {
        let r = gemm_row(gpu, what, m, n, k, reps)?;
        s.push_str(&format!(
            "{:<40} {:<18} {:>12.2} {:>15.2} {:>11.0}%\n",
            r.what,
            format!("{m}×{n}×{k}"),
            r.ours,
            r.cublas,
            100.0 * r.ours / r.cublas
        ));
    }
    let rows = bandwidth_rows(gpu, bandwidth_elements, reps)?;
    let copy = rows[0].gbps;
    s.push_str(&format!(
        "\nmemory-bound kernels on {} elements          GB/s   of copy\n",
        bandwidth_elements
    ));
    for r in &rows {
        s.push_str(&format!(
            "{:<44} {:>8.0} {:>8.0}%\n",
            r.what,
            r.gbps,
            100.0 * r.gbps / copy
        ));
    }
    Ok(s)
}
