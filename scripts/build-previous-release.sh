#!/usr/bin/env bash
# Builds the previous release's fastvirt-csi (scripts/previous-release.env) from git history into a
# cache outside the checkout, for the upgrade test. Idempotent: a second run only prints.
#
# The last line of output is the directory holding `fastvirt-csi`; csi-driver/tests/upgrade.rs
# finds it through FASTVIRT_PREVIOUS_RELEASE. When this clone's history lacks the release (a
# shallow clone), the last line is empty and the test skips, saying so.
#
# Environment:
#   FASTVIRT_RELEASE_CACHE  cache root (default /var/cache/fastvirt/releases)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=previous-release.env
. scripts/previous-release.env

cache_root="${FASTVIRT_RELEASE_CACHE:-/var/cache/fastvirt/releases}"
out="$cache_root/$PREVIOUS_RELEASE"
if [ -x "$out/fastvirt-csi" ]; then
  echo "$out"
  exit 0
fi
if ! git cat-file -e "$PREVIOUS_RELEASE^{commit}" 2>/dev/null; then
  echo "build-previous-release.sh: this clone has no commit $PREVIOUS_RELEASE (shallow?); the upgrade test will skip" >&2
  echo ""
  exit 0
fi
src="$cache_root/src-$PREVIOUS_RELEASE"
rm -rf "$src"
mkdir -p "$src"
git archive "$PREVIOUS_RELEASE" | tar -x -C "$src"
# One target directory for every release: their dependencies mostly agree, so a newer previous
# release rebuilds little.
(cd "$src" && CARGO_TARGET_DIR="$cache_root/target" cargo build --locked --quiet -p fastvirt-csi --bin fastvirt-csi)
mkdir -p "$out.tmp"
cp "$cache_root/target/debug/fastvirt-csi" "$out.tmp/fastvirt-csi"
rm -rf "$out" "$src"
mv "$out.tmp" "$out"
echo "$out"
