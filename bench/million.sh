#!/usr/bin/env bash
# Memory at scale, side by side in one run:
#  1. an image from a dumpfile of ENTRIES (default 1,000,000) entries, 1000
#     per directory, a third of the files inline and the rest external
#     objects, next to the reference mkcomposefs (MKCOMPOSEFS, else the one
#     on PATH); the two images must be byte for byte the same. Dumpfiles in
#     EXTRA_DUMPS (such as composefs's tests/assets/cs9-x86_64-developer
#     .dump.gz) are compared the same way. Best of RUNS.
#  2. a commit of a directory of as many files (same names and mix), into
#     an empty repository and again unchanged, next to `ostree commit`; the
#     tree and each repository on fresh ext4 filesystems. One run
#     (COMMIT=0 skips it: making the tree takes about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ENTRIES=${ENTRIES:-1000000}
RUNS=${RUNS:-2}
COMMIT=${COMMIT:-1}
MKCOMPOSEFS=${MKCOMPOSEFS:-$(command -v mkcomposefs || true)}
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-million.XXXXXX)
trap 'cleanup_fs "$work"; rm -rf "$work"' EXIT

dirs=$(( ENTRIES / 1000 ))
python3 - "$dirs" > "$work/big.dump" <<'PY'
import hashlib, sys
dirs = int(sys.argv[1])
t = "1700000000.0"
print("/ 4096 40755 %d 0 0 0 %s - - -" % (dirs + 2, t))
for d in range(dirs):
    print("/d%04d 4096 40755 2 0 0 0 %s - - -" % (d, t))
    for f in range(999):
        if f % 3 == 0:
            print("/d%04d/f%04d 11 100644 1 0 0 0 %s - hello\\x20world -" % (d, f, t))
        else:
            h = hashlib.sha256(b"%d/%d" % (d, f)).hexdigest()
            print("/d%04d/f%04d 4096 100644 1 0 0 0 %s %s/%s - %s" % (d, f, t, h[:2], h[2:], h))
PY
entries=$(wc -l < "$work/big.dump")
echo "dumpfile: $entries entries, $(du -h "$work/big.dump" | cut -f1)"
[ -n "$MKCOMPOSEFS" ] || echo "no reference mkcomposefs (set MKCOMPOSEFS=PATH): sealtree alone"

# image NAME DUMPFILE: both writers, best of RUNS, the same bytes or fail.
image() {
    local name=$1 dump=$2
    for _ in $(seq "$RUNS"); do
        timed "$work/t" "$st" mkcomposefs --from-file "$dump" "$work/st.cfs"; keep "st_$name" "$work/t"
        if [ -n "$MKCOMPOSEFS" ]; then
            timed "$work/t" "$MKCOMPOSEFS" --from-file "$dump" "$work/ref.cfs"; keep "ref_$name" "$work/t"
        fi
    done
    row "sealtree mkcomposefs, $name" "st_$name"
    [ -n "$MKCOMPOSEFS" ] || return 0
    row "reference mkcomposefs, $name" "ref_$name"
    if ! cmp -s "$work/st.cfs" "$work/ref.cfs"; then
        echo "FAIL: the images of $name differ" >&2
        exit 1
    fi
    awk "BEGIN{printf \"image %s: identical bytes, time ratio %.2f, peak %d vs %d MiB\n\", \
        \"$name\", $(best "st_$name") / $(best "ref_$name"), $(peak_mib "st_$name"), $(peak_mib "ref_$name")}"
}

image "$entries entries" "$work/big.dump"
for extra in ${EXTRA_DUMPS:-}; do
    case $extra in
        *.gz) zcat "$extra" > "$work/extra.dump" ;;
        *) cp "$extra" "$work/extra.dump" ;;
    esac
    image "$(basename "$extra")" "$work/extra.dump"
done
echo "goal: at most 300 MiB for $entries entries (sealtree peak $(peak_mib "st_$entries entries") MiB)"

[ "$COMMIT" = 1 ] || exit 0
echo "making a tree of $entries entries"
src=$(fresh_fs "$work" src 12G 3000000)
python3 - "$dirs" "$src/tree" <<'PY'
import os, sys
dirs, root = int(sys.argv[1]), sys.argv[2]
os.mkdir(root)
for d in range(dirs):
    dp = os.path.join(root, "d%04d" % d)
    os.mkdir(dp)
    for f in range(999):
        with open(os.path.join(dp, "f%04d" % f), "wb") as fh:
            fh.write(b"hello world" if f % 3 == 0 else b"%d/%d " % (d, f) * 20)
PY
sync
repo=$(fresh_fs "$work" st 12G 3000000)
"$st" --repo "$repo/repo" init
timed "$work/t" "$st" --repo "$repo/repo" commit -b big --tree "$src/tree"; keep st_cold "$work/t"
sleep 1   # files changed in the last second are never taken from the stat cache
timed "$work/t" "$st" --repo "$repo/repo" commit -b big --tree "$src/tree"; keep st_warm "$work/t"
row "sealtree commit, empty repo" st_cold
row "sealtree commit, unchanged" st_warm
if command -v ostree >/dev/null; then
    repo=$(fresh_fs "$work" os 12G 3000000)
    ostree init --repo="$repo/repo" --mode=bare-user
    timed "$work/t" ostree commit --repo="$repo/repo" --branch=big --tree=dir="$src/tree"; keep os_cold "$work/t"
    row "ostree commit, empty repo" os_cold
else
    echo "ostree not installed (apt-get install ostree): no side-by-side commit figure"
fi
echo "goal: a commit under 400 MiB (sealtree peak $(peak_mib st_cold) MiB empty, $(peak_mib st_warm) MiB unchanged)"
