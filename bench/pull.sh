#!/usr/bin/env bash
# Pull speed side by side in one run, both from the same nginx on
# 127.0.0.1: `sealtree pull` of a commit of a tree (default /usr/share)
# into an empty repository, and `ostree pull` of the same tree from an
# archive-mode ostree repository into an empty bare-user one. Best of RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/share}
for tool in ostree nginx; do
    command -v $tool >/dev/null || { echo "$tool is needed: apt-get install $tool" >&2; exit 1; }
done
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-bench-pull.XXXXXX)
port=$((20000 + RANDOM % 20000))
cleanup() {
    [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
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

mkdir -p "$work/nginx/logs" "$work/nginx/tmp"
cat > "$work/nginx/nginx.conf" <<CONF
user root;
worker_processes 2;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    server { listen 127.0.0.1:$port; root $work/srv; }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
sleep 0.5
url="http://127.0.0.1:$port"

# best SECONDS PEAK_KB of a command line over $RUNS runs; $run numbers the run.
measure() {
    local cmd=$1 best="" peak=0
    for run in $(seq "$RUNS"); do
        eval "/usr/bin/time -f '%e %M' -o \"\$work/time\" $cmd" > /dev/null
        read -r secs kb < "$work/time"
        if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; fi
        [ "$kb" -gt "$peak" ] && peak=$kb
    done
    echo "$best $peak"
}
for run in $(seq "$RUNS"); do
    "$st" --repo "$work/st$run" init
    "$st" --repo "$work/st$run" remote add origin "$url/st" --trusted "$work/k.pub"
    ostree init --repo="$work/os$run" --mode=bare-user
    ostree remote add --repo="$work/os$run" --no-gpg-verify origin "$url/os"
done
objects=$(find "$work/srv/st/objects" -type f | wc -l)
read -r st_s st_kb < <(measure '"$st" --repo "$work/st$run" pull origin bench')
read -r os_s os_kb < <(measure 'ostree pull --repo="$work/os$run" origin bench')
printf '%-44s %8s s %6s MiB\n' "sealtree pull ($objects objects, signed)" "$st_s" "$((st_kb / 1024))"
printf '%-44s %8s s %6s MiB\n' "ostree pull (archive repo, unsigned)" "$os_s" "$((os_kb / 1024))"
awk "BEGIN{printf \"ratio: %.3f\n\", $st_s / $os_s}"
