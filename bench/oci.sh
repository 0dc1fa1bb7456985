#!/usr/bin/env bash
# Committing a container image side by side in one run: the Debian rootfs
# (the mmdebstrap system of the boot tests) as a one-layer OCI image
# layout, committed with `sealtree commit --oci`, against the way without
# it: `umoci unpack` of the same image, then `sealtree commit --tree` of
# the unpacked rootfs. Each run writes into a fresh ext4 filesystem.
# Prints the best time of RUNS and the peak RSS of each, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
for tool in umoci mmdebstrap; do
    command -v $tool >/dev/null || { echo "$tool is needed: apt-get install $tool" >&2; exit 1; }
done
cargo build --release --quiet
st="$PWD/target/release/sealtree"
rootfs=$(bash tests/vm/debian-base.sh)
work=$(mktemp -d /var/tmp/sealtree-bench-oci.XXXXXX)
trap 'cleanup_fs "$work"; rm -rf "$work"' EXIT

umoci init --layout "$work/img"
umoci new --image "$work/img:debian"
umoci raw add-layer --image "$work/img:debian" "$rootfs"
echo "image: $rootfs as one gzip layer, $(du -sm "$work/img" | cut -f1) MiB; $(tar -tf "$rootfs" | wc -l) entries"
cat "$work/img/blobs/sha256/"* > /dev/null   # warm the page cache

for run in $(seq "$RUNS"); do
    fs=$(fresh_fs "$work" "oci$run")
    "$st" --repo "$fs/repo" init
    timed "$work/t" "$st" --repo "$fs/repo" commit -b os --oci "oci:$work/img:debian"; keep oci "$work/t"
    oci_image=$("$st" --repo "$fs/repo" show os | awk '/^Image:/ {print $2}')

    fs=$(fresh_fs "$work" "unpack$run")
    timed "$work/t" umoci unpack --image "$work/img:debian" "$fs/bundle"; keep unpack "$work/t"
    "$st" --repo "$fs/repo" init
    timed "$work/t" "$st" --repo "$fs/repo" commit -b os --tree "$fs/bundle/rootfs"; keep tree "$work/t"
    tree_image=$("$st" --repo "$fs/repo" show os | awk '/^Image:/ {print $2}')
    [ "$oci_image" = "$tree_image" ] || echo "warning: images differ: $oci_image (--oci) vs $tree_image (unpack)" >&2
    # The path without --oci is the sum of its two steps, per run.
    read -r a _ <<< "${BENCH_SECS[unpack]##* }"
    read -r b _ <<< "${BENCH_SECS[tree]##* }"
    echo "$(awk "BEGIN{print $a + $b}") $(( BENCH_PEAK[unpack] > BENCH_PEAK[tree] ? BENCH_PEAK[unpack] : BENCH_PEAK[tree] ))" > "$work/t"
    keep both "$work/t"
    cleanup_fs "$work"
done
row "sealtree commit --oci oci:LAYOUT" oci
row "umoci unpack" unpack
row "sealtree commit --tree (the unpack)" tree
row "umoci unpack + commit --tree" both
awk "BEGIN{printf \"oci: time ratio commit --oci / (unpack + commit --tree) %.2f\n\", $(best oci) / $(best both)}"
