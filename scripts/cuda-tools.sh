#!/usr/bin/env bash
# Installs the CUDA compile tools the kernel checks need (NVRTC, CUDA headers, ptxas) from
# NVIDIA's Python wheels into .cuda-tools/ when no CUDA toolkit provides them, then prints
# the environment to use them. Source it: `. scripts/cuda-tools.sh`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${REWIND_CUDA_TOOLS:-$root/.cuda-tools}"
if [ ! -x "$tools/nvidia/cuda_nvcc/bin/ptxas" ] || [ ! -e "$tools/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ]; then
  echo "installing NVRTC, CUDA headers and ptxas (NVIDIA wheels, ~130 MB download) into $tools" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tools" \
    nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86 >&2
fi
# cudarc opens "libnvrtc.so"; the wheel ships only the versioned name.
ln -sf libnvrtc.so.12 "$tools/nvidia/cuda_nvrtc/lib/libnvrtc.so"
export REWIND_CUDA_TOOLS="$tools"
export REWIND_PTXAS="$tools/nvidia/cuda_nvcc/bin/ptxas"
export LD_LIBRARY_PATH="$tools/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
