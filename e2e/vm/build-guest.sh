#!/usr/bin/env bash
# Builds the guest for the VM end-to-end test: Debian's cloud kernel and a busybox initramfs whose
# init writes or verifies a pattern on the first virtio disk and powers off. Both come from Debian
# packages (apt-get download, extracted without installing). Cached: reruns are free.
# Usage: build-guest.sh OUT_DIR
set -euo pipefail
out=${1:?usage: build-guest.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
stamp="v1 $(sha256sum "$here/init" | cut -c1-16)"
if [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kernel_pkg" ]; then
  apt-get update -qq
  kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
apt-get download -qq "$kernel_pkg" busybox-static 2>/dev/null || { apt-get update -qq; apt-get download -qq "$kernel_pkg" busybox-static; }
dpkg-deb -x "$kernel_pkg"_*.deb kernel
dpkg-deb -x busybox-static_*.deb busybox
version=$(ls kernel/lib/modules)

mkdir -p root/bin root/dev root/proc root/sys root/lib/modules
cp busybox/bin/busybox root/bin/busybox
for applet in sh mount insmod dd sha256sum cat echo poweroff sleep head yes ls sed wc; do
  ln -s busybox "root/bin/$applet"
done
# virtio-blk and what it needs, in load order.
for module in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev virtio/virtio_pci block/virtio_blk; do
  cp "kernel/lib/modules/$version/kernel/drivers/$module.ko" root/lib/modules/
done
install -m 0755 "$here/init" root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.img"
cp "kernel/boot/vmlinuz-$version" "$out/vmlinuz"
echo "$stamp" > "$out/stamp"
echo "guest kernel $version and initramfs in $out"
