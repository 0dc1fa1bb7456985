#!/usr/bin/env bash
# Builds the Debian bookworm system the real-* boot tests install: systemd,
# udev, dracut, tpm2-tools, the Debian 6.12 kernel from bookworm-backports, made with
# mmdebstrap. Written once as a tarball (OUT, default
# /var/cache/sealtree-vm/debian-base-HASH.tar, HASH of this script) and
# reused; the sealtree parts (binary, dracut module, keys, units) are
# added per run. Prints the tarball's path.
set -euo pipefail
OUT=${1:-/var/cache/sealtree-vm/debian-base-$(sha256sum "$0" | cut -c1-12).tar}
[ -s "$OUT" ] && { echo "$OUT"; exit 0; }
mkdir -p "$(dirname "$OUT")"
mirror=http://deb.debian.org/debian
start=$SECONDS
mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
    --include=systemd,systemd-sysv,udev,kmod,dracut,e2fsprogs,dosfstools,mount,strace,tpm2-tools,libtss2-tcti-device0 \
    --customize-hook='chroot "$1" apt-get install -y -qq --no-install-recommends -t bookworm-backports linux-image-amd64 >/dev/null' \
    --customize-hook='chroot "$1" apt-get clean' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
    bookworm "$OUT.tmp" \
    "deb $mirror bookworm main" "deb $mirror bookworm-backports main" >&2
mv "$OUT.tmp" "$OUT"
echo "debian base: $OUT ($(du -m "$OUT" | cut -f1) MiB, $((SECONDS - start)) s)" >&2
echo "$OUT"
