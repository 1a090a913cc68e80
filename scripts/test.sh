#!/usr/bin/env bash
# The test command: every test (unit, integration, property, doc, and the CUDA kernel build
# checks: NVRTC + ptxas for sm_80 and sm_90) in release mode, and a build of the benches.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda-tools.sh
cargo test --release --all-features
cargo bench --no-run --quiet --all-features
