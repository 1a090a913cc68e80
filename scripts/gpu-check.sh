#!/usr/bin/env bash
# Runs every GPU test on a machine with a CUDA device, from test binaries built elsewhere
# (the borrowed GPU machines have no Rust toolchain). Build here first:
#   cargo test --release --features cuda --no-run --message-format=json \
#     | python3 -c 'import json,sys; [print(m["executable"]) for l in sys.stdin for m in [json.loads(l)] if m.get("executable") and "cuda_gpu" in m["executable"]]' > target/gpu-tests.txt
# then copy target/gpu-tests.txt and the listed binaries to the GPU machine and run this script.
# CUDA 12 or 13 libraries are found through LD_LIBRARY_PATH (libcuda.so.1, libnvrtc.so).
set -uo pipefail
out="${OUT:-/tmp/rewind-gpu}"
mkdir -p "$out"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
# cudarc opens libnvrtc.so; give it one when only a versioned name exists (CUDA 13).
if ! ls /usr/local/cuda/lib64/libnvrtc.so >/dev/null 2>&1; then
  lib=$(ls /usr/local/cuda/lib64/libnvrtc.so.* 2>/dev/null | head -1)
  if [ -n "$lib" ]; then mkdir -p /tmp/rewind-libs && ln -sf "$lib" /tmp/rewind-libs/libnvrtc.so && export LD_LIBRARY_PATH="/tmp/rewind-libs:$LD_LIBRARY_PATH"; fi
fi
export REWIND_CUDA_INCLUDE="${REWIND_CUDA_INCLUDE:-/usr/local/cuda/include}"
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$out/gpu.txt"
status=0
while read -r bin; do
  timeout 240 "$bin" --include-ignored --test-threads=1 2>&1 | tee -a "$out/gpu-tests.log" || status=1
done < "${1:-target/gpu-tests.txt}"
echo "GPU tests exit status: $status" | tee -a "$out/gpu-tests.log"
exit $status
