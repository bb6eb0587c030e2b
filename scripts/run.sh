#!/usr/bin/env bash
# The main job: start fastvirt-csi on a local pool, create and publish a block volume the way
# kubelet would, and measure it against the raw disk. Needs root. Extra arguments go to
# fastvirt-bench (see `--help`), e.g. `--quick` or `--update-docs docs/benchmarks.md`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

scripts/install-deps.sh
cargo build --release --locked -p fastvirt-csi -p fastvirt-e2e
exec target/release/fastvirt-bench "$@"
