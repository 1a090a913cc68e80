#!/usr/bin/env bash
# The test command: every test (unit, integration, property, doc) in release mode, and a build
# of the benches so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-features
cargo bench --no-run --quiet
