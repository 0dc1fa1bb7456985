#!/usr/bin/env bash
# Image-building speed, side by side in one run:
#  1. an image from a dumpfile of >= 60k entries (a dump of /usr's image);
#  2. directory mode over /usr/share into an empty object store, warm cache,
#     next to `ostree commit` of the same tree into an empty bare-user repo.
# Each figure is the best of RUNS runs, with peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/share}
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# best SECONDS PEAK_KB of a command line over $RUNS runs; $run numbers the
# run, so each can write somewhere new.
measure() {
    local cmd=$1
    local best="" peak=0
    for run in $(seq "$RUNS"); do
        eval "/usr/bin/time -f '%e %M' -o \"\$work/time\" $cmd" >/dev/null
        read -r secs kb < "$work/time"
        if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; fi
        [ "$kb" -gt "$peak" ] && peak=$kb
    done
    echo "$best $peak"
}

echo "preparing a dumpfile from an image of /usr"
"$st" mkcomposefs /usr "$work/usr.cfs"
"$st" composefs-dump "$work/usr.cfs" "$work/usr.dump"
entries=$(wc -l < "$work/usr.dump")
head -n 60000 "$work/usr.dump" > "$work/usr60k.dump"

read -r t60 m60 < <(measure '"$st" mkcomposefs --from-file "$work/usr60k.dump" "$work/out.cfs"')
read -r tall mall < <(measure '"$st" mkcomposefs --from-file "$work/usr.dump" "$work/out.cfs"')
printf '%-48s %8s s %8s MiB\n' "image from dumpfile, 60000 entries" "$t60" "$((m60 / 1024))"
printf '%-48s %8s s %8s MiB\n' "image from dumpfile, $entries entries" "$tall" "$((mall / 1024))"

files=$(find "$SRC" | wc -l)
cat -- $(find "$SRC" -type f -size -64M 2>/dev/null | head -n 200000) >/dev/null 2>&1 || true  # warm the cache
# A new store (and ostree repo) per run: deleting the last one first would
# leave ext4 with many recently freed inodes, slowing new allocations.
read -r tdir mdir < <(measure '"$st" mkcomposefs --digest-store="$work/store$run" "$SRC" "$work/share.cfs"')
printf '%-48s %8s s %8s MiB\n' "sealtree mkcomposefs $SRC ($files entries) + store" "$tdir" "$((mdir / 1024))"
read -r tnos mnos < <(measure '"$st" mkcomposefs "$SRC" "$work/share.cfs"')
printf '%-48s %8s s %8s MiB\n' "sealtree mkcomposefs $SRC, no store" "$tnos" "$((mnos / 1024))"

if command -v ostree >/dev/null; then
    for run in $(seq "$RUNS"); do ostree init --repo="$work/repo$run" --mode=bare-user; done
    read -r tost most < <(measure 'ostree commit --repo="$work/repo$run" --branch=bench --tree=dir="$SRC"')
    printf '%-48s %8s s %8s MiB\n' "ostree commit $SRC (bare-user)" "$tost" "$((most / 1024))"
    awk "BEGIN{printf \"ratio sealtree/ostree: %.2f\n\", $tdir / $tost}"
else
    echo "ostree not installed (apt-get install ostree) - no side-by-side figure"
fi
