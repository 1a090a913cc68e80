#!/usr/bin/env bash
# GPU checks, in two halves (the borrowed GPU machines have no Rust toolchain and no network):
#   scripts/gpu-check.sh build       here: builds the GPU test binary, the GPU bench binary and
#                                    the `rewind` binary with --features cuda into target/gpu-bundle/
#                                    (stripped; carry that folder to the GPU machine)
#   scripts/gpu-check.sh run [DIR]   there: runs every GPU test (each kernel against its CPU
#                                    reference; one NCCL rank's buckets and ZeRO-1 shards),
#                                    `rewind bench --cuda` and the criterion GPU bench;
#                                    writes gpu.txt, gpu-tests.log, bench-cuda.txt, criterion.txt and
#                                    summary.txt under $OUT (default /tmp/rewind-gpu). < 5 minutes.
# CUDA 12 or 13 libraries are found under /usr/local/cuda (libcuda.so.1, libnvrtc, libcublas).
set -uo pipefail
mode="${1:-run}"
bundle="${2:-target/gpu-bundle}"

if [ "$mode" = build ]; then
  set -e
  mkdir -p "$bundle"
  list() { python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and any(k in m["executable"] for k in sys.argv[1:]): print(m["executable"])' "$@"; }
  cargo test --release -p rewind --features cuda --test cuda_gpu --no-run --message-format=json | list cuda_gpu > "$bundle/tests.txt"
  # NCCL's one-rank smoke test (without MPI: the GPU machine has none).
  cargo test --release -p rewind-lab --features nccl --test dist_nccl --no-run --message-format=json | list dist_nccl >> "$bundle/tests.txt"
  cargo bench -p rewind-lab --features cuda --bench cuda --no-run --message-format=json | list deps/cuda- > "$bundle/benches.txt"
  cargo build --release -p rewind-lab --features cuda --bin rewind
  for f in $(cat "$bundle/tests.txt" "$bundle/benches.txt") target/release/rewind; do
    cp "$f" "$bundle/" && strip "$bundle/$(basename "$f")"
  done
  (cd "$bundle" && for f in tests.txt benches.txt; do sed -i 's#.*/##' "$f"; done)
  du -sh "$bundle"
  exit 0
fi

out="${OUT:-/tmp/rewind-gpu}"
mkdir -p "$out"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
# cudarc opens libnvrtc.so / libcublas.so (or .so.12); CUDA 13 may ship only .so.13.
mkdir -p /tmp/rewind-libs
for lib in nvrtc cublas cublasLt; do
  if ! ls /usr/local/cuda/lib64/lib$lib.so >/dev/null 2>&1; then
    v=$(ls /usr/local/cuda/lib64/lib$lib.so.* 2>/dev/null | head -1)
    [ -n "$v" ] && ln -sf "$v" /tmp/rewind-libs/lib$lib.so
  fi
done
# cudarc opens libnccl.so; systems ship libnccl.so.2 (Debian's libnccl2, or PyTorch's wheel).
if ! ls /usr/local/cuda/lib64/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so >/dev/null 2>&1; then
  v=$(ls /usr/lib/x86_64-linux-gnu/libnccl.so.* /usr/local/cuda/lib64/libnccl.so.* \
        /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.* \
        /usr/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.* 2>/dev/null | head -1)
  [ -n "$v" ] && ln -sf "$v" /tmp/rewind-libs/libnccl.so
fi
export LD_LIBRARY_PATH="/tmp/rewind-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export REWIND_CUDA_INCLUDE="${REWIND_CUDA_INCLUDE:-/usr/local/cuda/include}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
status=0
while read -r bin; do
  timeout 240 "$bundle/$bin" --include-ignored --test-threads=1 2>&1 | tee -a "$out/gpu-tests.log" || status=1
done < "$bundle/tests.txt"
timeout 120 "$bundle/rewind" bench --cuda 2>&1 | tee "$out/bench-cuda.txt" || status=1
while read -r bin; do
  timeout 120 "$bundle/$bin" --bench 2>&1 | tee -a "$out/criterion.txt" || status=1
done < "$bundle/benches.txt"
{
  echo "GPU: $(tail -1 "$out/gpu.txt")"
  grep -E "^test result" "$out/gpu-tests.log"
  cat "$out/bench-cuda.txt"
  grep -E "^(hgemm|bandwidth)|time:|thrpt:" "$out/criterion.txt"
  echo "exit status: $status"
} > "$out/summary.txt"
cat "$out/summary.txt"
exit $status
