#!/usr/bin/env bash
# Pull speed side by side in one run, all from the same nginx on
# 127.0.0.1, each run writing into a fresh ext4 filesystem:
#   - `sealtree pull` of a signed commit of a tree (default /usr/share)
#     into an empty repository (every object verified by its fs-verity
#     digest, made durable, then published);
#   - curl fetching the same object files with 8 parallel connections
#     into a directory (raw HTTP throughput: no verification, no fsync),
#     and for scale the same followed by a sync of that filesystem (what
#     the disk takes to make them durable, as the pull does);
#   - `ostree pull` of the same tree from an archive-mode repository
#     into an empty bare-user one.
# Best of RUNS; peak RSS; the ratios to curl and to ostree.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/share}
for tool in ostree nginx curl; do
    command -v $tool >/dev/null || { echo "$tool is needed: apt-get install $tool" >&2; exit 1; }
done
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench-pull.XXXXXX)
cleanup() {
    stop_nginx "$work"
    cleanup_fs "$work"
    rm -rf "$work"
}
trap cleanup EXIT

echo "tree: $SRC, $(find "$SRC" | wc -l) entries, $(du -sb "$SRC" | cut -f1) bytes"
echo "preparing: a sealtree repository and an archive-mode ostree repository of it"
"$st" --repo "$work/srv/st" init
"$st" key generate --secret "$work/k.sec" --public "$work/k.pub" > /dev/null
"$st" --repo "$work/srv/st" commit -b bench --tree "$SRC" --sign-key "$work/k.sec" > /dev/null
"$st" --repo "$work/srv/st" publish --sign-key "$work/k.sec" > /dev/null
ostree init --repo="$work/srv/os" --mode=archive
ostree commit --repo="$work/srv/os" --branch=bench --tree=dir="$SRC" > /dev/null

url=$(start_nginx "$work" "$work/srv")

# The object files, as curl's config: one url and output per object.
(cd "$work/srv/st" && find objects -type f) > "$work/objects.txt"
objects=$(wc -l < "$work/objects.txt")
bytes=$(cd "$work/srv/st" && du -sb objects | cut -f1)
awk -v u="$url/st" '{ printf "url = \"%s/%s\"\noutput = \"%s\"\n", u, $0, $0 }' "$work/objects.txt" > "$work/curl.cfg"
(cd "$work/srv/st" && xargs cat < "$work/objects.txt" > /dev/null)   # warm the page cache

for run in $(seq "$RUNS"); do
    fs=$(fresh_fs "$work" "st$run")
    "$st" --repo "$fs/repo" init
    "$st" --repo "$fs/repo" remote add origin "$url/st" --trusted "$work/k.pub"
    timed "$work/t" "$st" --repo "$fs/repo" pull origin bench
    keep st "$work/t"

    fs=$(fresh_fs "$work" "curl$run")
    timed "$work/t" bash -c "cd '$fs' && curl -s --no-progress-meter --fail --create-dirs --parallel --parallel-max 8 -K '$work/curl.cfg'"
    keep curl "$work/t"
    got=$(find "$fs/objects" -type f | wc -l)
    [ "$got" = "$objects" ] || { echo "curl fetched $got of $objects objects" >&2; exit 1; }

    fs=$(fresh_fs "$work" "curlsync$run")
    timed "$work/t" bash -c "cd '$fs' && curl -s --no-progress-meter --fail --create-dirs --parallel --parallel-max 8 -K '$work/curl.cfg' && sync -f ."
    keep curl_sync "$work/t"

    fs=$(fresh_fs "$work" "os$run")
    ostree init --repo="$fs/repo" --mode=bare-user
    ostree remote add --repo="$fs/repo" --no-gpg-verify origin "$url/os"
    timed "$work/t" ostree pull --repo="$fs/repo" origin bench
    keep os "$work/t"
    cleanup_fs "$work"
done
s=$(best st); c=$(best curl); o=$(best os)
echo "$objects objects, $bytes bytes"
row "sealtree pull (signed, verified, durable)" st
row "curl, 8 parallel connections (raw HTTP)" curl
row "curl as above, then sync (durable)" curl_sync
row "ostree pull (archive repo, unsigned)" os
awk "BEGIN{printf \"pull: ratio to curl %.2f (aim <= 1.11), to curl and sync %.2f, to ostree %.2f\n\", $s / $c, $s / $(best curl_sync), $s / $o}"
