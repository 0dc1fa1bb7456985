#!/usr/bin/env bash
# Delta updates side by side in one run, from the same nginx on
# 127.0.0.1: two Debian bookworm systems built with mmdebstrap
# (bench/debian-pair.sh), B upgrading systemd and its libraries from
# bookworm-backports over A. Both are committed to a sealtree repository
# (signed, published with --deltas) and to an archive-mode ostree
# repository (`ostree static-delta generate`, summary). Each run, into a
# fresh ext4 filesystem, a client pulls A, the server moves to B, and the
# client pulls B:
#   - bytes: what nginx sent for the A->B pull (its access log);
#   - apply time: the A->B pull's wall time (sealtree: delta fetched,
#     objects rebuilt, each verified by its fs-verity digest, made
#     durable; ostree: its static delta, into a bare-user repository).
# The same pulls without deltas are measured for scale. Best of RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
for tool in ostree nginx mmdebstrap; do
    command -v $tool >/dev/null || { echo "$tool is needed: apt-get install $tool" >&2; exit 1; }
done
mapfile -t trees < <(bench/debian-pair.sh)
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench-delta.XXXXXX)
cleanup() {
    stop_nginx "$work"
    cleanup_fs "$work"
    rm -rf "$work"
}
trap cleanup EXIT

echo "A: ${trees[0]} ($(tar -tf "${trees[0]}" | wc -l) entries)"
echo "B: ${trees[1]} ($(tar -tf "${trees[1]}" | wc -l) entries)"
srv=$work/srv
mkdir -p "$srv" "$work/a" "$work/b"
tar -xf "${trees[0]}" -C "$work/a"
tar -xf "${trees[1]}" -C "$work/b"

echo "preparing: sealtree and ostree server repositories at A, then at B with deltas"
"$st" key generate --secret "$work/k.sec" --public "$work/k.pub" > /dev/null
"$st" --repo "$srv/st" init
"$st" --repo "$srv/st" commit -b deb --tree "$work/a" --sign-key "$work/k.sec" > /dev/null
"$st" --repo "$srv/st" publish --sign-key "$work/k.sec" > /dev/null
cp -a "$srv/st" "$srv/st-a"
"$st" --repo "$srv/st" commit -b deb --tree "$work/b" --sign-key "$work/k.sec" > /dev/null
timed "$work/t" "$st" --repo "$srv/st" publish --sign-key "$work/k.sec" --deltas 1
read -r st_gen _ < "$work/t"
# files_bytes DIR: the bytes of the files under DIR.
files_bytes() { find "$1" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }'; }
st_delta=$(files_bytes "$srv/st/deltas")

ostree init --repo="$srv/os" --mode=archive
ostree commit --repo="$srv/os" --branch=deb --tree=dir="$work/a" > /dev/null
ostree summary --repo="$srv/os" -u
cp -a "$srv/os" "$srv/os-a"
ostree commit --repo="$srv/os" --branch=deb --tree=dir="$work/b" > /dev/null
timed "$work/t" ostree static-delta generate --repo="$srv/os" --from=deb^ --to=deb
read -r os_gen _ < "$work/t"
ostree summary --repo="$srv/os" -u
os_delta=$(files_bytes "$srv/os/deltas")

log=$work/nginx/logs/access.log
url=$(start_nginx "$work" "$srv" "$log")

# serve NAME DIR: the server's repository NAME is DIR from now on.
serve() { ln -sfn "$2" "$srv/$1"; }
# sent CMD...: run CMD, printing the bytes nginx sent while it ran.
sent() {
    local before
    before=$(wc -l < "$log")
    "$@"
    sleep 0.2   # nginx logs a request once it is done
    tail -n +$((before + 1)) "$log" | awk '{ n += $3 } END { print n + 0 }'
}

for run in $(seq "$RUNS"); do
    for how in delta whole; do
        fs=$(fresh_fs "$work" "st-$how-$run")
        serve cur-st st-a
        "$st" --repo "$fs/repo" init
        "$st" --repo "$fs/repo" remote add origin "$url/cur-st" --trusted "$work/k.pub"
        "$st" --repo "$fs/repo" pull origin deb > /dev/null
        serve cur-st st
        flag=; [ $how = whole ] && flag=--no-deltas
        bytes=$(sent timed "$work/t" "$st" --repo "$fs/repo" pull origin deb $flag)
        keep "st-$how" "$work/t"
        echo "$bytes" >> "$work/st-$how.bytes"

        fs=$(fresh_fs "$work" "os-$how-$run")
        serve cur-os os-a
        ostree init --repo="$fs/repo" --mode=bare-user
        ostree remote add --repo="$fs/repo" --no-gpg-verify origin "$url/cur-os"
        ostree pull --repo="$fs/repo" origin deb > /dev/null
        serve cur-os os
        flag=; [ $how = whole ] && flag=--disable-static-deltas
        bytes=$(sent timed "$work/t" ostree pull --repo="$fs/repo" origin deb $flag)
        keep "os-$how" "$work/t"
        echo "$bytes" >> "$work/os-$how.bytes"
        cleanup_fs "$work"
    done
done

cp "$log" "${KEEP_LOG:-/dev/null}"
# b NAME: the fewest bytes nginx sent for NAME's pull in any run.
b() { sort -n "$work/$1.bytes" | head -1; }
echo
printf '%-44s %12s %12s\n' "" "sealtree" "ostree"
printf '%-44s %12s %12s\n' "delta on the server (bytes)" "$st_delta" "$os_delta"
printf '%-44s %12s %12s\n' "making the delta (s)" "$st_gen" "$os_gen"
printf '%-44s %12s %12s\n' "A->B pull with the delta: bytes sent" "$(b st-delta)" "$(b os-delta)"
printf '%-44s %12s %12s\n' "  (each run)" "$(paste -sd/ "$work/st-delta.bytes")" "$(paste -sd/ "$work/os-delta.bytes")"
printf '%-44s %12s %12s\n' "A->B pull without deltas: bytes sent" "$(b st-whole)" "$(b os-whole)"
row "sealtree A->B pull, delta" st-delta
row "ostree A->B pull, static delta" os-delta
row "sealtree A->B pull, no delta" st-whole
row "ostree A->B pull, no delta" os-whole
# ostree's pull also fetches loose objects beside its delta: the bytes
# ratio is taken against the smaller of its pull and its delta alone.
os_bytes=$(b os-delta)
[ "$os_delta" -lt "$os_bytes" ] && os_bytes=$os_delta
echo "bytes: sealtree's A->B pull $(b st-delta), against ostree's $os_bytes (the smaller of its pull and its delta)"
awk "BEGIN{printf \"delta: bytes ratio sealtree/ostree %.2f, apply time ratio %.2f\n\", $(b st-delta) / $os_bytes, $(best st-delta) / $(best os-delta)}"
