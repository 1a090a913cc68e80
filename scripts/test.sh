#!/usr/bin/env bash
# The test command: every test of both packages (unit, integration, property, doc, the CUDA
# kernel build checks: NVRTC + ptxas for sm_80 and sm_90, and data parallelism under mpirun
# with 2 and 3 ranks, the AVX512_BF16 kernel under Bochs's CPU emulator) in release mode, a build
# of the benches, and the guard that keeps the engine's dependency tree lean. Installs Open MPI,
# libclang and the emulator first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/engine-deps.sh
./scripts/mpi-install.sh
. scripts/cuda-tools.sh
. scripts/bochs-tools.sh
cargo test --release --workspace --all-features
cargo bench --no-run --quiet --workspace --all-features
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --workspace --all-features
