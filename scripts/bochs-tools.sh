#!/usr/bin/env bash
# Installs what the emulated kernel test needs (Bochs's x86 CPU emulator through the
# bochscpu-python wheel, and the loader shim scripts/bochs_shim.c) into .bochs-tools/ when
# missing, then exports REWIND_BOCHS_TOOLS. Source it: `. scripts/bochs-tools.sh`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${REWIND_BOCHS_TOOLS:-$root/.bochs-tools}"
if [ ! -d "$tools/bochscpu" ]; then
  echo "installing bochscpu-python (Bochs's CPU emulator, ~6 MB) into $tools" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tools" \
    bochscpu-python==0.4.0 >&2
fi
if [ ! -e "$tools/bochs_shim.so" ] || [ "$root/scripts/bochs_shim.c" -nt "$tools/bochs_shim.so" ]; then
  cc -shared -fPIC -O2 -o "$tools/bochs_shim.so" "$root/scripts/bochs_shim.c" -ldl
fi
export REWIND_BOCHS_TOOLS="$tools"
