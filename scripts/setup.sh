#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine with only rustup's stable toolchain lacks
# to build and test Vigil. Safe to run again: it installs only what is missing.
#
#   libclang-dev   bindgen, for the rocksdb crate's bundled RocksDB
#   g++ make       RocksDB's C++ build
#   bsdutils       `logger`, the real syslog sender the tests use
#   rsyslog        a real syslog receiver the syslog sink is tested against
#   syslog-ng      a second one (TLS, CEF parsing); it conflicts with rsyslog in apt, so
#                  its packages are unpacked under ~/.cache/vigil-peers/syslog-ng
#   cargo-deb      the Debian package (scripts/package.sh); cargo-deny, the dependency
#   cargo-deny     checks of scripts/test.sh (both `cargo install --locked`, pinned)
#   promtool       Prometheus's metrics linter, unpacked from Debian's prometheus package
#                  under ~/.cache/vigil-peers/prometheus
#   openssl        test certificates for TLS peers
#   nftables       the real firewall `block_ip` is tested against, inside a network
#   iproute2       namespace the test creates with `ip netns` (needs root)
#   nats-server    the NATS server isolate_node publishes to (and the scale-out tests)
#   rustc-web ...  a Rust toolchain for wasm32 guests when rustup has no wasm32 target
#                  (scripts/wasm-setup.sh)
#   python3-venv   a venv (~/.cache/vigil-venv) with the OCSF JSON Schemas and ECS
#                  validators that check the transforms' output, and aiosmtpd, the
#                  SMTP server the email channel is tested against; schemathesis and
#                  openapi-spec-validator for the API's OpenAPI document and fuzz run;
#                  medallion (a TAXII 2.1 server), stix2 and stix2-validator for threat
#                  intel; moto (S3 with signature checking) for forensic evidence storage;
#                  pySigma and its SQLite backend, the reference Sigma engine
#
# usage: scripts/setup.sh [--build-only]   (--build-only: just what building the binary
#                                           needs; the demo's first run)
set -euo pipefail

packages=(libclang-dev g++ make pkg-config)
if [ "${1:-}" != "--build-only" ]; then
  packages+=(bsdutils rsyslog openssl nftables iproute2 nats-server python3-venv libivykis0 libnet1 libpcre3 libwrap0 libjson-c5 libglib2.0-0)
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

# Building and running Vigil needs nothing more (the demo's first run stops here).
[ "${1:-}" = "--build-only" ] && exit 0

# The WebAssembly toolchain that builds the plugin examples (the test build needs it; the
# binary does not, so the demo skips its ~100 MiB of packages).
"$(dirname "$0")/wasm-setup.sh"

# syslog-ng, unpacked beside rsyslog (the two packages conflict).
peers="${VIGIL_PEERS:-$HOME/.cache/vigil-peers}"
if [ ! -x "$peers/syslog-ng/usr/sbin/syslog-ng" ]; then
  echo "setup: unpacking syslog-ng into $peers/syslog-ng" >&2
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download syslog-ng-core syslog-ng-scl >/dev/null)
  mkdir -p "$peers/syslog-ng"
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$peers/syslog-ng"; done
  rm -rf "$tmp"
fi

# cargo-deb builds the Debian package (scripts/package.sh, and its test); cargo-deny checks
# the dependency tree (licences, bans, sources, advisories). Pinned, built from crates.io.
for tool in cargo-deb@3.8.0 cargo-deny@0.20.2; do
  name="${tool%@*}"
  if ! command -v "$name" >/dev/null || ! "$name" --version 2>/dev/null | grep -q "${tool#*@}"; then
    echo "setup: installing $tool (a few minutes, once)" >&2
    CARGO_TARGET_DIR="$HOME/.cache/vigil-tools-target" cargo install -j"${VIGIL_JOBS:-2}" --locked "$tool"
  fi
done

# promtool, Prometheus's metrics linter, from Debian's prometheus package (unpacked, not
# installed: only the linter is wanted, not the server and its service).
if [ ! -x "$peers/prometheus/usr/bin/promtool" ]; then
  echo "setup: unpacking promtool into $peers/prometheus" >&2
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download prometheus >/dev/null)
  mkdir -p "$peers/prometheus"
  dpkg -x "$tmp"/prometheus_*.deb "$peers/prometheus"
  rm -rf "$tmp"
fi

# Python peers: the transforms' validators and an SMTP server.
venv="${VIGIL_VENV:-$HOME/.cache/vigil-venv}"
if ! "$venv/bin/python" -c 'import ocsf_json_schema, jsonschema, yaml, aiosmtpd, schemathesis, openapi_spec_validator, medallion, stix2, stix2validator, moto, boto3, sigma.backends.sqlite' 2>/dev/null; then
  echo "setup: creating the Python venv in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ocsf-json-schema==1.2.0 jsonschema==4.23.0 pyyaml==6.0.3 aiosmtpd==1.4.6 \
    schemathesis==3.39.16 hypothesis==6.124.7 openapi-spec-validator==0.7.1 \
    medallion==3.0.0 stix2==3.0.2 stix2-validator==3.2.0 'moto[server]==5.2.5' boto3==1.44.8 \
    pysigma==2.0.1 pysigma-backend-sqlite==2.1.1
fi
