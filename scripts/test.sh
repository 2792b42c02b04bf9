#!/usr/bin/env bash
# Sets up what is missing, checks formatting, lints (clippy, warnings as errors) and the
# dependency tree, then builds and runs every test of the workspace: unit tests,
# the end-to-end suite in tests/ (real sockets on loopback, the real `vigil` binary,
# kill -9 recovery), the shipped rule pack, and the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# One warm target directory outside the clone (the RocksDB C++ build alone takes ~12 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
jobs="${VIGIL_JOBS:-$(nproc)}"

scripts/setup.sh
# Test executables and incremental caches of builds long gone pile up (tens of GiB in a
# day of edits); a build refreshes the ones it uses, and dependencies are kept, so nothing
# slow is rebuilt.
for profile in debug release; do
  find "$CARGO_TARGET_DIR/$profile/deps" -maxdepth 1 -type f -executable ! -name "*.*" -mmin +180 -delete 2>/dev/null || true
  find "$CARGO_TARGET_DIR/$profile/incremental" -mindepth 1 -maxdepth 1 -type d -mmin +180 -exec rm -rf {} + 2>/dev/null || true
done
cargo fmt --all -- --check
# Lints as errors, tests and benches included.
cargo clippy -j"$jobs" --workspace --all-targets -- -D warnings
# The dependency tree (deny.toml). Advisories need the RustSec database from GitHub: checked
# when it can be fetched, and said so loudly when it cannot (docs/operations.md).
cargo deny --log-level error check licenses bans sources
if git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
else
  echo "test: RustSec advisories NOT checked: github.com is unreachable from here (run 'cargo deny check advisories' where it is)" >&2
fi
cargo build -j"$jobs" --workspace --all-targets
cargo test -j"$jobs" --workspace --all-targets
cargo test -j"$jobs" --workspace --doc
