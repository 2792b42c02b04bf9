#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine with only rustup's stable toolchain lacks
# to build and test Vigil. Safe to run again: it installs only what is missing.
#
#   libclang-dev   bindgen, for the rocksdb crate's bundled RocksDB
#   g++ make       RocksDB's C++ build
#   bsdutils       `logger`, the real syslog sender the tests use
#
# usage: scripts/setup.sh [--build-only]   (--build-only: just what building needs)
set -euo pipefail

packages=(libclang-dev g++ make pkg-config)
if [ "${1:-}" != "--build-only" ]; then
  packages+=(bsdutils)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
