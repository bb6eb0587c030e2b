#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the CSI conformance suite and csi-sanity on
# real loop devices, the cluster tests in a real Kubernetes built from the reference components,
# the VM guest, and a smoke run of the benchmark. Host tests need root; without it they skip and
# say so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
# A test run builds once: incremental state (gigabytes for the workspace's crates) only costs disk
# and time there. Export CARGO_INCREMENTAL=1 to keep it between runs of your own.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/install-deps.sh
# The reference components (etcd, kube-*, kubelet, the CSI sidecars, csi-sanity, helm), built once
# into a cache outside the checkout; the tests find them through FASTVIRT_KUBE_BIN. A cold build
# (Go module downloads and compiles) runs beside the Rust build below; a warm one takes a second.
kube_log="$(mktemp)"
# Its own process group (setsid), so a failing step below can stop it with its go children.
setsid scripts/install-kube.sh >"$kube_log.out" 2>"$kube_log" &
kube_pid=$!
# The previous release's fastvirt-csi, for the upgrade test: built from git history into a cache
# outside the checkout, once per release.
release_log="$(mktemp)"
setsid scripts/build-previous-release.sh >"$release_log.out" 2>"$release_log" &
release_pid=$!
# A failing step below must not leave the builds running.
trap 'kill -- "-$kube_pid" "-$release_pid" 2>/dev/null || true' EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run
if ! wait "$kube_pid"; then
  trap - EXIT
  kill -- "-$release_pid" 2>/dev/null || true
  echo "scripts/install-kube.sh failed:" >&2
  cat "$kube_log" >&2
  exit 1
fi
if ! wait "$release_pid"; then
  trap - EXIT
  echo "scripts/build-previous-release.sh failed:" >&2
  cat "$release_log" >&2
  exit 1
fi
trap - EXIT
cat "$release_log" >&2
FASTVIRT_KUBE_BIN="$(tail -n 1 "$kube_log.out")"
FASTVIRT_PREVIOUS_RELEASE="$(tail -n 1 "$release_log.out")"
export FASTVIRT_KUBE_BIN FASTVIRT_PREVIOUS_RELEASE
rm -f "$kube_log" "$kube_log.out" "$release_log" "$release_log.out"
cargo test --workspace --locked
scripts/fuzz.sh
