#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the CSI conformance suite on real loop
# devices, and a smoke run of the benchmark. Host tests need root; without it they skip and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
