#!/usr/bin/env bash
# Builds the two Debian bookworm systems bench/delta.sh updates between,
# with mmdebstrap: A has systemd from bookworm; B is A with systemd and
# its libraries upgraded from bookworm-backports. Written once as
# tarballs (no /dev) under DIR (default /var/cache/sealtree-bench) and
# reused; prints the two paths.
set -euo pipefail
DIR=${1:-/var/cache/sealtree-bench}
mirror=http://deb.debian.org/debian
packages=systemd,systemd-sysv,udev,dbus,kmod,libpam-systemd,libnss-systemd
upgrade="systemd systemd-sysv udev libsystemd0 libsystemd-shared libudev1 libpam-systemd libnss-systemd"
mkdir -p "$DIR"
build() {
    local out=$1
    shift
    [ -s "$out" ] && return 0
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar --skip=output/dev \
        --include=$packages "$@" \
        --customize-hook='chroot "$1" apt-get clean' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
        bookworm "$out.tmp" \
        "deb $mirror bookworm main" "deb $mirror bookworm-backports main" >&2
    mv "$out.tmp" "$out"
}
build "$DIR/debian-a.tar"
build "$DIR/debian-b.tar" \
    --customize-hook="chroot \"\$1\" apt-get install -y -qq --no-install-recommends -t bookworm-backports $upgrade >/dev/null"
echo "$DIR/debian-a.tar"
echo "$DIR/debian-b.tar"
