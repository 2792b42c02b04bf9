#!/usr/bin/env bash
# Makes sure a Rust toolchain that builds WebAssembly plugins (wasm32-unknown-unknown) is
# present; called by scripts/setup.sh. Safe to run again.
#
#  1. rustup has the wasm32-unknown-unknown target: nothing to do (plugin authors with
#     network access: `rustup target add wasm32-unknown-unknown`).
#  2. It does not, and cannot download it: Debian's `rustc-web` (a rustc whose LLVM has the
#     wasm backend), `rust-web-src` (the standard library's sources, built for wasm32 with
#     cargo's build-std) and `lld-22` (the linker it calls) are installed.
#
# guest-examples/artifacts/build.rs picks whichever is present (see docs/plugins.md).
set -euo pipefail

if rustup target list --installed 2>/dev/null | grep -qx 'wasm32-unknown-unknown'; then
  exit 0
fi

packages=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "wasm-setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
/usr/bin/rustc --print target-list | grep -qx wasm32-unknown-unknown || {
  echo "wasm-setup: /usr/bin/rustc cannot target wasm32-unknown-unknown" >&2
  exit 1
}
