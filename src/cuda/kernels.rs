//! Kernel sources (embedded) and their NVRTC compilation.

use super::require_nvrtc;
use crate::error::{Error, Result, Source};

/// The shared header, inlined into each source (NVRTC gets no file system at run time).
const COMMON: &str = include_str!("../../kernels/common.cuh");

/// One kernel family: file name, source, and whether multiply–adds may be fused (the 8-bit
/// optimizer must not fuse, to match its CPU reference bit for bit).
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// The `.cu` file.
    pub file: &'static str,
    /// Its text.
    pub source: &'static str,
    /// `--fmad` setting.
    pub fmad: bool,
    /// The `extern "C"` entry points it defines.
    pub entries: &'static [&'static str],
}

/// Every kernel family rewind ships.
pub const SOURCES: [KernelSource; 3] = [
    KernelSource {
        file: "hgemm.cu",
        source: include_str!("../../kernels/hgemm.cu"),
        fmad: true,
        entries: &[
            "hgemm_nn_f32",
            "hgemm_nn_f16",
            "hgemm_nt_f32",
            "hgemm_nt_f16",
            "hgemm_tn_f32",
            "hgemm_tn_f16",
        ],
    },
    KernelSource {
        file: "loss_scale.cu",
        source: include_str!("../../kernels/loss_scale.cu"),
        fmad: true,
        entries: &["unscale_found_inf_f32", "update_scale"],
    },
    KernelSource {
        file: "adam8bit.cu",
        source: include_str!("../../kernels/adam8bit.cu"),
        fmad: false,
        entries: &["adam8bit_step_f32", "adam8bit_step_f16"],
    },
];

/// The source with `common.cuh` inlined.
pub fn full_source(k: &KernelSource) -> String {
    k.source.replace(
        "#include \"common.cuh\"",
        COMMON.trim_start_matches("#pragma once"),
    )
}

/// Where the CUDA headers are (`cuda_fp16.h`): `$REWIND_CUDA_INCLUDE`, the wheel cache of
/// `scripts/cuda-tools.sh`, or the usual toolkit folders.
pub fn include_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = std::env::var("REWIND_CUDA_INCLUDE").into_iter().collect();
    if let Ok(root) = std::env::var("REWIND_CUDA_TOOLS") {
        dirs.push(format!("{root}/nvidia/cuda_runtime/include"));
        dirs.push(format!("{root}/nvidia/cuda_nvcc/include"));
    }
    for d in [
        "/usr/local/cuda/include",
        "/usr/local/cuda/targets/x86_64-linux/include",
    ] {
        if std::path::Path::new(d).exists() {
            dirs.push(d.to_string());
        }
    }
    dirs
}

/// Compiles one kernel family to PTX for `arch` (e.g. `"sm_90"`).
pub fn compile_ptx(k: &KernelSource, arch: &'static str) -> Result<String> {
    require_nvrtc()?;
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        fmad: Some(k.fmad),
        include_paths: include_dirs(),
        options: vec!["--std=c++17".to_string()],
        name: Some(k.file.to_string()),
        ..Default::default()
    };
    let ptx =
        cudarc::nvrtc::compile_ptx_with_opts(full_source(k), opts).map_err(|e| Error::Cuda {
            op: "nvrtc",
            msg: format!("{}: {e:?}", k.file),
            source: Some(Source(std::sync::Arc::new(e))),
        })?;
    Ok(ptx.to_src())
}
