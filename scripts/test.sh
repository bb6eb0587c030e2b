#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the CSI conformance suite and csi-sanity on
# real loop devices, the cluster tests in a real Kubernetes built from the reference components,
# the VM guest, and a smoke run of the benchmark. Host tests need root; without it they skip and
# say so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

scripts/install-deps.sh
# The reference components (etcd, kube-*, kubelet, the CSI sidecars, csi-sanity, helm), built
# once into a cache outside the checkout; the tests find them through FASTVIRT_KUBE_BIN.
FASTVIRT_KUBE_BIN="$(scripts/install-kube.sh | tail -n 1)"
export FASTVIRT_KUBE_BIN
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
