#!/usr/bin/env bash
# Builds the reference Kubernetes components fastvirt's cluster tests run against, at pinned
# versions, from their Go modules, into a cache outside the checkout; installs containerd, runc,
# the CNI plugins and iptables from Debian. Idempotent: a second run only checks and prints.
#
# The last line of output is the directory holding the binaries (kube-apiserver, kubelet, kubectl,
# etcd, helm, csi-sanity, the CSI sidecars, snapshot-controller); the VolumeSnapshot CRDs are in
# its sibling `crds/`.
#
# Environment:
#   FASTVIRT_KUBE_CACHE  cache root (default /var/cache/fastvirt/kube)
#
# Versions: the sidecar tags are the ones charts/fastvirt/values.yaml pins (a chart test checks
# they agree with this file). node-driver-registrar and livenessprobe are not served by the Go
# module proxy this project can reach (every query answers 403 "not available"), so the test
# cluster runs the driver's built-in registrar and health endpoint in their place; see
# docs/testing.md.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v4.3.1
PROVISIONER_VERSION=v6.4.0
RESIZER_VERSION=v2.3.0
SNAPSHOTTER_VERSION=v8.7.0
CSI_TEST_VERSION=v5.6.0

if [ "${1:-}" = "--print-versions" ]; then
  for v in KUBE_VERSION ETCD_VERSION HELM_VERSION PROVISIONER_VERSION RESIZER_VERSION \
    SNAPSHOTTER_VERSION CSI_TEST_VERSION; do
    echo "$v=${!v}"
  done
  exit 0
fi

cache_root="${FASTVIRT_KUBE_CACHE:-/var/cache/fastvirt/kube}"
key="k8s-$KUBE_VERSION.etcd-$ETCD_VERSION.helm-$HELM_VERSION.prov-$PROVISIONER_VERSION.rsz-$RESIZER_VERSION.snap-$SNAPSHOTTER_VERSION.sanity-$CSI_TEST_VERSION"
out="$cache_root/$key"
bin="$out/bin"
src="$out/src"
mkdir -p "$bin" "$src" "$out/crds"

log() { echo "install-kube: $*" >&2; }
die() { echo "install-kube: $*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------------------
declare -A debs=(
  [containerd]=containerd
  [runc]=runc
  [ctr]=containerd
  [iptables]=iptables
  [nsenter]=util-linux
  [ip]=iproute2
  [busybox]=busybox-static
  [gcc]=gcc
  [python3]=python3
  [openssl]=openssl
  [conntrack]=conntrack
)
missing=()
for tool in "${!debs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] || missing+=("${debs[$tool]}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
# glibc's static libc for the pause binary.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); rerun as root"
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The official Go tarball installs to /usr/local/go, which not every shell has on PATH.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null 2>&1 || die "go is missing: install Go 1.26 or newer"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

# --- wrapper modules -------------------------------------------------------------------------
# A module whose go.mod has replace directives cannot be built with `go install mod@version`:
# build it from a small wrapper module that requires it and repeats the replaces, pointing each
# local-path replace (k8s's staging modules, snapshotter's ./client) at the published version.

# wrapper_module NAME MODULE VERSION LOCAL_REPLACE_VERSION
# LOCAL_REPLACE_VERSION is the published version that stands in for the dependency's local-path
# replaces, or "-" where those modules are required at real versions already (etcd).
wrapper_module() {
  local name="$1" module="$2" version="$3" local_version="$4"
  local dir="$src/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  (
    cd "$dir"
    go mod init "fastvirt.local/$name" >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    go mod edit -json "$gomod" | python3 -c '
import json, sys
mod, local_version = json.load(sys.stdin), sys.argv[1]
for rep in mod.get("Replace") or []:
    old, new = rep["Old"]["Path"], rep["New"]
    if new.get("Version"):
        print(old + "=" + new["Path"] + "@" + new["Version"])
    elif local_version != "-" and not new["Path"].endswith("FORBIDDEN_DEPENDENCY"):
        print(f"{old}={old}@{local_version}")
' "$local_version" | while IFS= read -r rep; do
      go mod edit -replace="$rep"
    done
  ) >&2
  echo "$dir"
}

stamp_ok() { [ -f "$out/.built-$1" ] && [ -x "$bin/$2" ]; }
mark_built() { touch "$out/.built-$1"; }

# build_module STAMP MODULE VERSION LOCAL_REPLACE_VERSION LDFLAGS PACKAGE...
build_module() {
  local stamp="$1" module="$2" version="$3" local_version="$4" ldflags="$5"
  shift 5
  local dir
  dir="$(wrapper_module "$stamp" "$module" "$version" "$local_version")"
  (
    cd "$dir"
    go get "${@/%/@$version}" >/dev/null
    go build -trimpath -ldflags "$ldflags" -o "$bin/" "$@"
  ) >&2
  mark_built "$stamp"
}

# --- etcd ------------------------------------------------------------------------------------
if ! stamp_ok etcd etcd; then
  log "building etcd $ETCD_VERSION"
  build_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" - "-s -w" go.etcd.io/etcd/server/v3
  # The module root is the main package: go names it after the path's last non-version element.
  mv "$bin/server" "$bin/etcd"
fi

# --- Kubernetes ------------------------------------------------------------------------------
if ! stamp_ok kube kubelet; then
  log "building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl; the longest step)"
  minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  # Stamped into both version packages, as k/k's hack/lib/version.sh does, so /version,
  # `kubectl version` and the node's kubeletVersion report the real release.
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=()
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  build_module kube k8s.io/kubernetes "$KUBE_VERSION" "v0.${KUBE_VERSION#v1.}" "$ldflags" "${pkgs[@]}"
fi

# --- CSI sidecars and the snapshot controller ------------------------------------------------
if ! stamp_ok provisioner csi-provisioner; then
  log "building external-provisioner $PROVISIONER_VERSION"
  m=github.com/kubernetes-csi/external-provisioner/v6
  build_module provisioner "$m" "$PROVISIONER_VERSION" - "-s -w -X main.version=$PROVISIONER_VERSION" "$m/cmd/csi-provisioner"
fi
if ! stamp_ok resizer csi-resizer; then
  log "building external-resizer $RESIZER_VERSION"
  m=github.com/kubernetes-csi/external-resizer/v2
  build_module resizer "$m" "$RESIZER_VERSION" - "-s -w -X main.version=$RESIZER_VERSION" "$m/cmd/csi-resizer"
fi
if ! stamp_ok snapshotter snapshot-controller; then
  log "building external-snapshotter $SNAPSHOTTER_VERSION"
  m=github.com/kubernetes-csi/external-snapshotter/v8
  build_module snapshotter "$m" "$SNAPSHOTTER_VERSION" "$SNAPSHOTTER_VERSION" "-s -w -X main.version=$SNAPSHOTTER_VERSION" \
    "$m/cmd/csi-snapshotter" "$m/cmd/snapshot-controller"
fi

# --- csi-sanity and helm: their go.mods have no replaces --------------------------------------
if ! stamp_ok sanity csi-sanity; then
  log "building csi-sanity $CSI_TEST_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION" >&2
  mark_built sanity
fi
if ! stamp_ok helm helm; then
  log "building helm $HELM_VERSION"
  GOBIN="$bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
  mark_built helm
fi

# --- VolumeSnapshot CRDs (shipped in the client module's zip) ---------------------------------
if [ ! -f "$out/.built-snapshot-crds" ]; then
  client_dir="$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  for kind in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
    install -m 0644 "$client_dir/config/crd/snapshot.storage.k8s.io_$kind.yaml" "$out/crds/"
  done
  mark_built snapshot-crds
fi

# --- the sandbox (pause) binary: our own, a few lines of C built static -----------------------
if [ ! -x "$bin/pause" ]; then
  cat >"$src/pause.c" <<'C'
/* The pod sandbox's process: sleeps until told to stop, reaping any child it inherits. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  gcc -Os -Wall -Werror -static -o "$bin/pause" "$src/pause.c" >&2
fi

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl csi-provisioner \
  csi-resizer csi-snapshotter snapshot-controller csi-sanity helm pause; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing after the build"
done
# Captured first: grep -q closing the pipe early would fail the pipeline under pipefail.
reported="$("$bin/kubectl" version --client 2>/dev/null)" || die "kubectl version failed"
[[ "$reported" == *"$KUBE_VERSION"* ]] || die "kubectl does not report $KUBE_VERSION"
echo "$bin"
