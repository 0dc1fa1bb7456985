#!/usr/bin/env bash
# Commit speed side by side in one run: sealtree commit of a tree (default
# /usr/share) into an empty repository, then again unchanged, and the same
# with `ostree commit` into an empty bare-user repository. Best of RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/share}
command -v ostree >/dev/null || { echo "ostree is needed: apt-get install ostree" >&2; exit 1; }
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# best SECONDS PEAK_KB of a command line over $RUNS runs; $run numbers the
# run. New repositories per run: deleting the last one first would leave
# ext4 many recently freed inodes, slowing new allocations.
measure() {
    local cmd=$1 best="" peak=0
    for run in $(seq "$RUNS"); do
        eval "/usr/bin/time -f '%e %M' -o \"\$work/time\" $cmd" >/dev/null
        read -r secs kb < "$work/time"
        if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; fi
        [ "$kb" -gt "$peak" ] && peak=$kb
    done
    echo "$best $peak"
}

files=$(find "$SRC" | wc -l)
bytes=$(du -sb "$SRC" | cut -f1)
echo "tree: $SRC, $files entries, $bytes bytes (warming the page cache)"
tar -C "$SRC" -cf - . > /dev/null

for run in $(seq "$RUNS"); do
    "$st" --repo "$work/st$run" init
    ostree init --repo="$work/os$run" --mode=bare-user
done
read -r st_cold st_cold_kb < <(measure '"$st" --repo "$work/st$run" commit -b bench --tree "$SRC"')
sleep 1
read -r st_warm st_warm_kb < <(measure '"$st" --repo "$work/st$run" commit -b bench --tree "$SRC"')
read -r os_cold os_cold_kb < <(measure 'ostree commit --repo="$work/os$run" --branch=bench --tree=dir="$SRC"')
read -r os_warm os_warm_kb < <(measure 'ostree commit --repo="$work/os$run" --branch=bench --tree=dir="$SRC"')

row() { printf '%-34s %8s s %8s MiB\n' "$1" "$2" "$(( $3 / 1024 ))"; }
row "sealtree commit, empty repo" "$st_cold" "$st_cold_kb"
row "sealtree commit, unchanged" "$st_warm" "$st_warm_kb"
row "ostree commit, empty repo" "$os_cold" "$os_cold_kb"
row "ostree commit, unchanged" "$os_warm" "$os_warm_kb"
awk "BEGIN{printf \"ratio cold: %.3f (aim <= 0.25)\nratio unchanged: %.3f (aim <= 0.05)\n\", $st_cold / $os_cold, $st_warm / $os_warm}"
