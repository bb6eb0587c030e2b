#!/usr/bin/env bash
# Installs the host tools fastvirt's driver, tests and benchmark call. Idempotent: installs only
# what is missing, so it is cheap to run before every build.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: $1 is missing and installing it needs root; rerun as root" >&2
    exit 1
  fi
}

# command -> Debian package
declare -A tools=(
  [fio]=fio
  [mkfs.xfs]=xfsprogs
  [xfs_growfs]=xfsprogs
  [mkfs.ext4]=e2fsprogs
  [mkfs.btrfs]=btrfs-progs
  [btrfs]=btrfs-progs
  [resize2fs]=e2fsprogs
  [blkid]=util-linux
  [mkswap]=util-linux
  [fsfreeze]=util-linux
  [losetup]=mount
  [qemu-system-x86_64]=qemu-system-x86
  [cpio]=cpio
  [dpkg-deb]=dpkg
  [setpriv]=util-linux
)

# file -> Debian package (the benchmarks draw their plots' text with DejaVu Sans; the pgbench
# benchmark runs Debian's PostgreSQL, whichever major version the release ships)
declare -A files=(
  [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]=fonts-dejavu-core
)

missing=()
for tool in "${!tools[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
    missing+=("${tools[$tool]}")
  fi
done
for file in "${!files[@]}"; do
  if [ ! -e "$file" ]; then
    missing+=("${files[$file]}")
  fi
done
if ! compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null; then
  missing+=(postgresql)
fi

if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
  need_root "${packages[*]}"
  echo "install-deps: installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The VM test's guest (kernel + busybox initramfs) is built from Debian packages and cached.
if command -v qemu-system-x86_64 >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  bash "$(dirname "$0")/../e2e/vm/build-guest.sh" "$(dirname "$0")/../target/vm-guest" >/dev/null
fi

# helm, kubectl and the schema validators for the Helm chart's tests (into target/tools).
bash "$(dirname "$0")/install-chart-tools.sh"

# Python's gRPC client (grpcio) for csi-driver/tests/python_client.rs, in a virtualenv under
# /var/cache/fastvirt; like the other host tests, that test runs as root only.
if [ "$(id -u)" -eq 0 ] && [ "${FASTVIRT_SKIP_PYTHON:-}" != 1 ]; then
  bash "$(dirname "$0")/install-python-grpc.sh" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing; install Rust 1.89 or newer with rustup (https://rustup.rs)" >&2
  exit 1
fi
