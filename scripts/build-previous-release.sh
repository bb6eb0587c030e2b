#!/usr/bin/env bash
# Builds the previous release (scripts/previous-release.env) from git history into a cache outside
# the checkout, for the upgrade tests: its fastvirt-csi, fastvirt-operator and fastvirt-agent, and
# its chart in `repo/charts/fastvirt`. Idempotent: a second run only prints.
#
# The last line of output is that directory; csi-driver/tests/upgrade.rs and
# e2e/tests/chart_upgrade.rs find it through FASTVIRT_PREVIOUS_RELEASE. When this clone's history
# lacks the release (a shallow clone), the last line is empty and the tests skip, saying so.
#
# Environment:
#   FASTVIRT_RELEASE_CACHE  cache root (default /var/cache/fastvirt/releases)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=previous-release.env
. scripts/previous-release.env

cache_root="${FASTVIRT_RELEASE_CACHE:-/var/cache/fastvirt/releases}"
out="$cache_root/$PREVIOUS_RELEASE"
binaries=(fastvirt-csi fastvirt-operator fastvirt-agent)
if [ -x "$out/fastvirt-agent" ] && [ -d "$out/repo/charts/fastvirt" ]; then
  echo "$out"
  exit 0
fi
if ! git cat-file -e "$PREVIOUS_RELEASE^{commit}" 2>/dev/null; then
  echo "build-previous-release.sh: this clone has no commit $PREVIOUS_RELEASE (shallow?); the upgrade tests will skip" >&2
  echo ""
  exit 0
fi
src="$cache_root/src-$PREVIOUS_RELEASE"
rm -rf "$src"
mkdir -p "$src"
git archive "$PREVIOUS_RELEASE" | tar -x -C "$src"
# No debug info and no incremental state: these binaries are only run, and the CI disk is shared
# with the main build. The target directory goes once the binaries are copied (cargo never removes
# old artifacts, so a kept one would grow with every release); a new release builds from scratch,
# beside the main build, in a few minutes.
(cd "$src" && CARGO_TARGET_DIR="$cache_root/target" CARGO_INCREMENTAL=0 cargo build --locked --quiet \
  --config 'profile.dev.debug=false' --config 'profile.dev.package."*".debug=false' \
  -p fastvirt-csi -p fastvirt-operator -p fastvirt-agent --bins)
rm -rf "$out.tmp"
mkdir -p "$out.tmp/repo"
for binary in "${binaries[@]}"; do
  cp "$cache_root/target/debug/$binary" "$out.tmp/$binary"
done
git archive "$PREVIOUS_RELEASE" charts | tar -x -C "$out.tmp/repo"
rm -rf "$out" "$src" "$cache_root/target"
mv "$out.tmp" "$out"
# Releases older than this one are no longer tested against (only directories named like a
# commit are touched, whatever else the cache root holds).
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
  -regex '.*/[0-9a-f]{40}' ! -name "$PREVIOUS_RELEASE" -exec rm -rf {} +
echo "$out"
