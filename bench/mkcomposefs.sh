#!/usr/bin/env bash
# Image-building speed, side by side in one run:
#  1. an image from a dumpfile of >= 60k entries (a dump of /usr's image);
#  2. directory mode over /usr/share into an empty object store, warm cache,
#     next to `ostree commit` of the same tree into an empty bare-user repo.
# Each figure is the best of RUNS runs, with peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/share}
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# measure NAME CMD: CMD (one string, evaluated per run, $run numbering
# the run so each can write somewhere new) timed RUNS times under NAME.
measure() {
    local name=$1 cmd=$2
    for run in $(seq "$RUNS"); do
        eval "timed \"\$work/t\" $cmd"
        keep "$name" "$work/t"
    done
}

echo "preparing a dumpfile from an image of /usr"
"$st" mkcomposefs /usr "$work/usr.cfs"
"$st" composefs-dump "$work/usr.cfs" "$work/usr.dump"
entries=$(wc -l < "$work/usr.dump")
head -n 60000 "$work/usr.dump" > "$work/usr60k.dump"

measure d60 '"$st" mkcomposefs --from-file "$work/usr60k.dump" "$work/out.cfs"'
measure dall '"$st" mkcomposefs --from-file "$work/usr.dump" "$work/out.cfs"'
row "image from dumpfile, 60000 entries" d60
row "image from dumpfile, $entries entries" dall

files=$(find "$SRC" | wc -l)
cat -- $(find "$SRC" -type f -size -64M 2>/dev/null | head -n 200000) >/dev/null 2>&1 || true  # warm the cache
# A new store (and ostree repo) per run: deleting the last one first would
# leave ext4 with many recently freed inodes, slowing new allocations.
measure dir '"$st" mkcomposefs --digest-store="$work/store$run" "$SRC" "$work/share.cfs"'
row "sealtree mkcomposefs $SRC ($files entries) + store" dir
measure nostore '"$st" mkcomposefs "$SRC" "$work/share.cfs"'
row "sealtree mkcomposefs $SRC, no store" nostore

if command -v ostree >/dev/null; then
    for run in $(seq "$RUNS"); do ostree init --repo="$work/repo$run" --mode=bare-user; done
    measure ostree 'ostree commit --repo="$work/repo$run" --branch=bench --tree=dir="$SRC"'
    row "ostree commit $SRC (bare-user)" ostree
    awk "BEGIN{printf \"ratio sealtree/ostree: %.2f\n\", $(best dir) / $(best ostree)}"
else
    echo "ostree not installed (apt-get install ostree) - no side-by-side figure"
fi
