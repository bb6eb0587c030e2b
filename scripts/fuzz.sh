#!/usr/bin/env bash
# A bounded run of every cargo-fuzz target in fuzz/: installs cargo-fuzz (pinned) if it is missing,
# builds all targets once, then runs each for FASTVIRT_FUZZ_SECONDS (default 20) on a copy of its
# committed seed corpus, so the corpus in the tree never grows. Fails when a target finds a crash,
# a timeout, a leak or an out-of-memory input, and prints where the input was saved
# (fuzz/artifacts/<target>/).
#
#   FASTVIRT_FUZZ_SECONDS  seconds per target (default 20)
#   FASTVIRT_FUZZ_JOBS     targets run side by side (default: the number of CPUs)
#   FASTVIRT_FUZZ_TARGETS  space-separated targets to run (default: all)
#   FASTVIRT_FUZZ_RSS_MB   memory limit per target (default 2048)
#   FASTVIRT_FUZZ_TARGET_DIR  where the instrumented build goes (default
#                          /var/cache/fastvirt/fuzz-target, outside the checkout, so that a fresh
#                          clone rebuilds only fastvirt's own crates, not every dependency)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_fuzz_version=0.13.2
seconds="${FASTVIRT_FUZZ_SECONDS:-20}"
jobs="${FASTVIRT_FUZZ_JOBS:-$(nproc)}"
rss_mb="${FASTVIRT_FUZZ_RSS_MB:-2048}"
target_dir="${FASTVIRT_FUZZ_TARGET_DIR:-/var/cache/fastvirt/fuzz-target}"

# cargo-fuzz and libFuzzer's instrumentation need a nightly toolchain; this machine cannot download
# one, so without it the run is skipped, as the host tests skip without root.
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "SKIP scripts/fuzz.sh: no nightly toolchain (rustup toolchain list)"
  exit 0
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

cd fuzz
build_started=$SECONDS
# cargo never removes old artifacts: each change of the fuzz crate's dependencies or flags adds a
# set of ~30 instrumented binaries. Past a bound the directory starts over, so it cannot fill the
# disk it shares with the main build.
max_target_kib=$((8 * 1024 * 1024))
if [ -d "$target_dir" ] && [ "$(du -sk "$target_dir" | cut -f1)" -gt "$max_target_kib" ]; then
  echo "fuzz: $target_dir is over 8 GiB of old builds; starting it over"
  rm -rf "$target_dir"
fi
mkdir -p "$target_dir"
cargo +nightly fuzz build --target-dir "$target_dir"
echo "fuzz: built every target in $((SECONDS - build_started)) s"
bin_dir="$target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

# The targets are the files of fuzz_targets/ (`cargo fuzz list` also shows the seed generator).
read -r -a targets <<<"${FASTVIRT_FUZZ_TARGETS:-$(cd fuzz_targets && ls -- *.rs | sed 's/\.rs$//' | tr '\n' ' ')}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastvirt-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp" "$work/logs"

run_target() {
  local target=$1
  local corpus="$work/corpus/$target" artifacts="$work/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "corpus/$target" ]; then
    cp -R "corpus/$target/." "$corpus/"
  fi
  # The targets that read a file write it below TMPDIR, which goes with the work directory.
  TMPDIR="$work/tmp" "$bin_dir/$target" "$corpus" \
    -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 \
    >"$work/logs/$target.log" 2>&1 && echo 0 >"$work/logs/$target.rc" || echo $? >"$work/logs/$target.rc"
}

run_started=$SECONDS
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_target "$target" &
done
wait

passed=0
failed=0
for target in "${targets[@]}"; do
  if [ "$(cat "$work/logs/$target.rc" 2>/dev/null)" = 0 ]; then
    passed=$((passed + 1))
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/logs/$target.log")"
    cov="$(grep -o 'cov: [0-9]*' "$work/logs/$target.log" | tail -n 1)"
    echo "fuzz $target: ok, ${runs:-?} runs in ${seconds} s, ${cov:-cov: ?}"
  else
    failed=$((failed + 1))
    echo "fuzz $target: FAILED" >&2
    mkdir -p "artifacts/$target"
    cp "$work/logs/$target.log" "artifacts/$target/log"
    # The panic message, or libFuzzer's and the sanitizer's verdict; the whole log is kept.
    grep -E -m 3 -A 1 'panicked at|^==[0-9]+== ?ERROR|^SUMMARY' "$work/logs/$target.log" >&2 ||
      tail -n 20 "$work/logs/$target.log" >&2
    echo "fuzz $target: log at $PWD/artifacts/$target/log" >&2
    for input in "$work/artifacts/$target"/*-*; do
      [ -e "$input" ] || continue
      cp "$input" "artifacts/$target/"
      echo "fuzz $target: input saved at $PWD/artifacts/$target/$(basename "$input")" >&2
    done
    echo "fuzz $target: reproduce with: cd fuzz && cargo +nightly fuzz run $target artifacts/$target/<file>" >&2
  fi
done
echo "fuzz: ran ${#targets[@]} targets, ${seconds} s each, $jobs at a time, in $((SECONDS - run_started)) s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
