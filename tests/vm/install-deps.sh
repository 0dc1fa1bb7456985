#!/usr/bin/env bash
# Installs what the boot tests and demo/run need on a Debian bookworm host:
# qemu, OVMF, systemd-boot, sbsigntool, swtpm, mmdebstrap, dracut, busybox, mtools, and a
# Debian 6.12 kernel (fs-verity, overlayfs verity=, data-only lower
# layers) unpacked from its package into $VM_KERNEL_DIR (default
# /var/cache/sealtree-vm/kernel), not installed.
set -euo pipefail
KDIR=${VM_KERNEL_DIR:-/var/cache/sealtree-vm/kernel}
export DEBIAN_FRONTEND=noninteractive

if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/sealtree-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
fi
need=()
for pkg in dracut-core busybox-static cpio e2fsprogs kmod systemd \
    ovmf systemd-boot-efi mmdebstrap mtools dosfstools fdisk sbsigntool openssl swtpm tpm2-tools; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# From backports, matching the machine's qemu-utils.
if ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

if [ ! -f "$KDIR/vmlinuz" ]; then
    # The generic flavour (not -rt, not -cloud), newest.
    pkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1)
    [ -n "$pkg" ] || { echo "no linux-image 6.12 in bookworm-backports" >&2; exit 1; }
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq "$pkg")
    rm -rf "$KDIR.new" && mkdir -p "$KDIR.new"
    dpkg -x "$tmp"/*.deb "$KDIR.new/root"
    kver=$(ls "$KDIR.new/root/lib/modules")
    cp "$KDIR.new/root/boot/vmlinuz-$kver" "$KDIR.new/vmlinuz"
    echo "$kver" > "$KDIR.new/version"
    depmod -b "$KDIR.new/root" "$kver"
    rm -rf "$tmp" "$KDIR" && mv "$KDIR.new" "$KDIR"
fi
echo "kernel $(cat "$KDIR/version") in $KDIR"
