#!/usr/bin/env bash
# Installs Python's gRPC client (grpcio, the C-core client that many CSI tools use) and its code
# generator into a virtualenv outside the checkout, for csi-driver/tests/python_client.rs.
# Idempotent: a second run checks a stamp and prints the path at once. The last line printed is
# the virtualenv's python.
#
#   FASTVIRT_PYTHON_CACHE  cache root (default /var/cache/fastvirt)
#   PYTHON                 the interpreter to build the virtualenv from (default python3)
set -euo pipefail

# grpcio 1.85.3 is the current release; grpcio-tools (only the stub generator, not the client
# under test) has no 1.85.3, so it is pinned to the newest 1.85 it has, which accepts grpcio 1.85.3.
GRPCIO=1.85.3
GRPCIO_TOOLS=1.85.1
PROTOBUF=7.36.2

cache_root="${FASTVIRT_PYTHON_CACHE:-/var/cache/fastvirt}"
venv="$cache_root/python-grpc-$GRPCIO"
stamp="$venv/.fastvirt-installed"
want="grpcio==$GRPCIO grpcio-tools==$GRPCIO_TOOLS protobuf==$PROTOBUF"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "install-python-grpc: $python is missing; install Python 3 (Debian: python3 python3-venv)" >&2
  exit 1
fi

# Debian's python3 keeps venv (ensurepip) in a package of its own.
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-python-grpc: $python has no venv/ensurepip module; install python3-venv" >&2
    exit 1
  fi
  echo "install-python-grpc: installing python3-venv" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

mkdir -p "$cache_root"
# Two runs at once (a test and install-deps.sh) must not build the same virtualenv together.
exec 9>"$cache_root/.python-grpc.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi
echo "install-python-grpc: creating $venv ($want)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
# shellcheck disable=SC2086 # $want is a list of requirement words.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $want >&2
"$venv/bin/python" -c 'import grpc, grpc_tools.protoc, google.protobuf' >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
