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

# best SECONDS PEAK_KB of a command over $RUNS runs (setup runs before each).
measure() {
    local setup=$1; shift
    local best="" peak=0
    for _ in $(seq "$RUNS"); do
        eval "$setup"
        /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null
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

read -r t60 m60 < <(measure : "$st" mkcomposefs --from-file "$work/usr60k.dump" "$work/out.cfs")
read -r tall mall < <(measure : "$st" mkcomposefs --from-file "$work/usr.dump" "$work/out.cfs")
printf '%-48s %8s s %8s MiB\n' "image from dumpfile, 60000 entries" "$t60" "$((m60 / 1024))"
printf '%-48s %8s s %8s MiB\n' "image from dumpfile, $entries entries" "$tall" "$((mall / 1024))"

files=$(find "$SRC" | wc -l)
cat -- $(find "$SRC" -type f -size -64M 2>/dev/null | head -n 200000) >/dev/null 2>&1 || true  # warm the cache
read -r tdir mdir < <(measure 'rm -rf "$work/store"' "$st" mkcomposefs --digest-store="$work/store" "$SRC" "$work/share.cfs")
printf '%-48s %8s s %8s MiB\n' "sealtree mkcomposefs $SRC ($files entries) + store" "$tdir" "$((mdir / 1024))"
read -r tnos mnos < <(measure : "$st" mkcomposefs "$SRC" "$work/share.cfs")
printf '%-48s %8s s %8s MiB\n' "sealtree mkcomposefs $SRC, no store" "$tnos" "$((mnos / 1024))"

if command -v ostree >/dev/null; then
    read -r tost most < <(measure 'rm -rf "$work/repo"; ostree init --repo="$work/repo" --mode=bare-user' \
        ostree commit --repo="$work/repo" --branch=bench --tree=dir="$SRC")
    printf '%-48s %8s s %8s MiB\n' "ostree commit $SRC (bare-user)" "$tost" "$((most / 1024))"
    awk "BEGIN{printf \"ratio sealtree/ostree: %.2f\n\", $tdir / $tost}"
else
    echo "ostree not installed (apt-get install ostree) - no side-by-side figure"
fi
