#!/usr/bin/env bash
# Open MPI and libclang (the `mpi` crate's bindings are generated at build time) for the lab's
# `mpi` feature — data parallelism, `mpirun -np N rewind train …` — from Debian's packages,
# when they are missing.
set -euo pipefail
if command -v mpicc >/dev/null 2>&1 && compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q openmpi-bin libopenmpi-dev libclang-dev
