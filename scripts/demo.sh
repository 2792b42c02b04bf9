#!/usr/bin/env bash
# Builds Vigil and runs its main job on the embedded default: RocksDB under data/, the
# shipped rules in rules/, a demo stream with attacks hidden in normal traffic, and each
# incident printed as it opens. Extra arguments go to `vigil demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
scripts/setup.sh --build-only
exec cargo run -j"${VIGIL_JOBS:-$(nproc)}" --quiet -p vigil -- demo "$@"
