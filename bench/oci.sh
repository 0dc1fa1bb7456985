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

best() { sort -n | head -1; }
oci_s=() ; oci_kb=0 ; un_s=() ; un_kb=0 ; tree_s=() ; tree_kb=0
for run in $(seq "$RUNS"); do
    fs=$(fresh_fs "$work" "oci$run")
    "$st" --repo "$fs/repo" init
    timed "$work/t" "$st" --repo "$fs/repo" commit -b os --oci "oci:$work/img:debian"
    read -r s kb < "$work/t"; oci_s+=("$s"); [ "$kb" -gt "$oci_kb" ] && oci_kb=$kb
    oci_image=$("$st" --repo "$fs/repo" show os | awk '/^Image:/ {print $2}')

    fs=$(fresh_fs "$work" "unpack$run")
    timed "$work/t" umoci unpack --image "$work/img:debian" "$fs/bundle"
    read -r s kb < "$work/t"; un_s+=("$s"); [ "$kb" -gt "$un_kb" ] && un_kb=$kb
    "$st" --repo "$fs/repo" init
    timed "$work/t" "$st" --repo "$fs/repo" commit -b os --tree "$fs/bundle/rootfs"
    read -r s kb < "$work/t"; tree_s+=("$s"); [ "$kb" -gt "$tree_kb" ] && tree_kb=$kb
    tree_image=$("$st" --repo "$fs/repo" show os | awk '/^Image:/ {print $2}')
    [ "$oci_image" = "$tree_image" ] || echo "warning: images differ: $oci_image (--oci) vs $tree_image (unpack)" >&2
    cleanup_fs "$work"
done
# The path without --oci is the sum of its two steps, per run.
sums=()
for i in "${!un_s[@]}"; do sums+=("$(awk "BEGIN{print ${un_s[$i]} + ${tree_s[$i]}}")"); done
o=$(printf '%s\n' "${oci_s[@]}" | best)
u=$(printf '%s\n' "${un_s[@]}" | best)
t=$(printf '%s\n' "${tree_s[@]}" | best)
both=$(printf '%s\n' "${sums[@]}" | best)
row() { printf '%-44s %8s s %8s MiB\n' "$1" "$2" "$(( $3 / 1024 ))"; }
row "sealtree commit --oci oci:LAYOUT" "$o" "$oci_kb"
row "umoci unpack" "$u" "$un_kb"
row "sealtree commit --tree (the unpack)" "$t" "$tree_kb"
row "umoci unpack + commit --tree" "$both" "$(( un_kb > tree_kb ? un_kb : tree_kb ))"
awk "BEGIN{printf \"oci: time ratio commit --oci / (unpack + commit --tree) %.2f\n\", $o / $both}"
