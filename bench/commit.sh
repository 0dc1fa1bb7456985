#!/usr/bin/env bash
# Commit speed side by side in one run: sealtree commit of a tree (default
# /usr/share) into an empty repository, then again unchanged, and the same
# with `ostree commit` into an empty bare-user repository; for scale, the
# copy alone (`cp -r` and a sync, nothing hashed). Each run's
# repositories live on a fresh ext4 filesystem. Then a commit of a rootfs
# tar archive (TAR, default the one bench/debian-pair.sh makes) beside
# `ostree commit --tree=tar=`. Best of RUNS; peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/share}
TAR=${TAR:-/var/cache/sealtree-bench/debian-a.tar}
command -v ostree >/dev/null || { echo "ostree is needed: apt-get install ostree" >&2; exit 1; }
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench.XXXXXX)
trap 'cleanup_fs "$work"; rm -rf "$work"' EXIT

files=$(find "$SRC" | wc -l)
bytes=$(du -sb "$SRC" | cut -f1)
echo "tree: $SRC, $files entries, $bytes bytes (warming the page cache)"
tar -C "$SRC" -cf - . | cat > /dev/null   # through a pipe: tar skips reading when it writes to /dev/null
[ -f "$TAR" ] && cat "$TAR" > /dev/null

for run in $(seq "$RUNS"); do
    fs=$(fresh_fs "$work" "st$run")
    "$st" --repo "$fs/repo" init
    timed "$work/t" "$st" --repo "$fs/repo" commit -b bench --tree "$SRC"; keep st_cold "$work/t"
    sleep 1   # files changed in the last second are never taken from the stat cache
    timed "$work/t" "$st" --repo "$fs/repo" commit -b bench --tree "$SRC"; keep st_warm "$work/t"
    fs=$(fresh_fs "$work" "os$run")
    ostree init --repo="$fs/repo" --mode=bare-user
    timed "$work/t" ostree commit --repo="$fs/repo" --branch=bench --tree=dir="$SRC"; keep os_cold "$work/t"
    timed "$work/t" ostree commit --repo="$fs/repo" --branch=bench --tree=dir="$SRC"; keep os_warm "$work/t"
    fs=$(fresh_fs "$work" "cp$run")
    timed "$work/t" sh -c 'cp -r "$1" "$2" && sync -f "$2"' sh "$SRC" "$fs/copy"; keep cp "$work/t"
    if [ -f "$TAR" ]; then
        fs=$(fresh_fs "$work" "tar$run")
        "$st" --repo "$fs/st" init
        ostree init --repo="$fs/os" --mode=bare-user
        timed "$work/t" "$st" --repo "$fs/st" commit -b bench --tar "$TAR"; keep st_tar "$work/t"
        timed "$work/t" ostree commit --repo="$fs/os" --branch=bench --tree=tar="$TAR"; keep os_tar "$work/t"
    fi
    cleanup_fs "$work"
done
row "sealtree commit, empty repo" st_cold
row "sealtree commit, unchanged" st_warm
row "ostree commit, empty repo" os_cold
row "ostree commit, unchanged" os_warm
row "cp -r and sync (no hashing)" cp
if [ -f "$TAR" ]; then
    row "sealtree commit --tar ($(tar -tf "$TAR" | wc -l) entries)" st_tar
    row "ostree commit --tree=tar=" os_tar
    awk "BEGIN{printf \"tar: ratio %.3f\n\", $(best st_tar) / $(best os_tar)}"
else
    echo "NOT RUN: commit of a rootfs tar: no $TAR (make it with bench/debian-pair.sh)"
fi
awk "BEGIN{printf \"commit: ratio cold %.3f (aim <= 0.25), unchanged %.3f (aim <= 0.05)\n\", $(best st_cold) / $(best os_cold), $(best st_warm) / $(best os_warm)}"
