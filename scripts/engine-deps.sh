#!/usr/bin/env bash
# Fails when the engine (package `rewind`, default features) pulls a CLI, progress-bar, JSON,
# allocator or plotting crate, or more than 22 unique crates (itself included; its GEMM is its
# own, so no GEMM crate is among them): embedding the engine must stay cheap. The lab's tools
# depend on those crates; the engine never does.
set -euo pipefail
cd "$(dirname "$0")/.."
max=22
tree="$(cargo tree -p rewind -e normal --prefix none --no-dedupe | sort -u)"
count="$(printf '%s\n' "$tree" | wc -l)"
banned="$(printf '%s\n' "$tree" | grep -E '^(clap|clap_builder|clap_derive|indicatif|serde_json|mimalloc|libmimalloc-sys|plotters|plotters-svg|plotters-backend|plotlib|poloto|charming)( |$)' || true)"
if [ -n "$banned" ]; then
  echo "engine-deps: the engine's normal dependencies include crates that belong to the lab:" >&2
  printf '%s\n' "$banned" | sed 's/^/  /' >&2
  exit 1
fi
if [ "$count" -gt "$max" ]; then
  echo "engine-deps: the engine pulls $count unique crates (limit $max):" >&2
  printf '%s\n' "$tree" | sed 's/^/  /' >&2
  exit 1
fi
echo "engine-deps: $count unique crates in the engine's normal dependency tree (limit $max), none of the lab's"
