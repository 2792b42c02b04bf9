#!/usr/bin/env bash
# Sets up what is missing, then builds and runs every test of the workspace: unit tests,
# the end-to-end suite in tests/ (real sockets on loopback, the real `vigil` binary,
# kill -9 recovery), the shipped rule pack, and the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# One warm target directory outside the clone (the RocksDB C++ build alone takes ~12 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
jobs="${VIGIL_JOBS:-2}"

scripts/setup.sh
cargo fmt --all -- --check
cargo build -j"$jobs" --workspace --all-targets
cargo test -j"$jobs" --workspace --all-targets
cargo test -j"$jobs" --workspace --doc
