# Shared by the bench scripts: a fresh filesystem per timed run, and one
# timing of a command line (seconds and peak RSS).
#
# Work that creates many files is timed on a fresh ext4 filesystem per
# run: on a reused one, ext4 skipping recently freed inodes swings the
# figures by up to 2x.

# fresh_fs WORK NAME [SIZE [INODES]]: mount a new ext4 filesystem of SIZE
# (default 4G; INODES inodes, default mkfs's) at WORK/NAME and print that
# path; unmounted by cleanup_fs WORK. Its inode tables and journal are
# zeroed by mkfs, not by a kernel thread during the timed run.
fresh_fs() {
    local work=$1 name=$2 size=${3:-4G} inodes=${4:-}
    truncate -s "$size" "$work/$name.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 ${inodes:+-N "$inodes"} "$work/$name.img"
    mkdir -p "$work/$name"
    mount -o loop "$work/$name.img" "$work/$name"
    sync   # mkfs's writes are on disk, not written back during the run
    echo "$work/$name"
}

# cleanup_fs WORK: unmount every filesystem fresh_fs mounted under WORK
# and delete its image, so that no run's pages stay cached into the next.
cleanup_fs() {
    local work=$1 m
    for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do
        umount "$m" || umount -l "$m"
        rm -f "$m.img"
    done
}

# timed OUT CMD...: run CMD (output discarded), writing "SECONDS PEAK_KIB"
# to OUT.
timed() {
    local out=$1
    shift
    /usr/bin/time -f '%e %M' -o "$out" "$@" > /dev/null
}

# Figures by name across runs: keep NAME FILE adds the "SECONDS PEAK_KIB"
# that `timed` wrote to FILE; best NAME is the fastest run; row LABEL NAME
# prints the best, the highest peak and every run.
declare -A BENCH_SECS BENCH_PEAK
keep() {
    local s kb
    read -r s kb < "$2"
    BENCH_SECS[$1]="${BENCH_SECS[$1]:-} $s"
    [ "$kb" -gt "${BENCH_PEAK[$1]:-0}" ] && BENCH_PEAK[$1]=$kb
    return 0
}
best() { printf '%s\n' ${BENCH_SECS[$1]} | sort -n | head -1; }
peak_mib() { echo $(( ${BENCH_PEAK[$1]} / 1024 )); }
row() {
    printf '%-44s %8s s %8s MiB   (runs:%s)\n' "$1" "$(best "$2")" "$(peak_mib "$2")" "${BENCH_SECS[$2]}"
}

# start_nginx WORK ROOT [LOG]: serve ROOT with a new nginx on 127.0.0.1
# (its files under WORK/nginx), logging "URI STATUS BYTES" per request to
# LOG if given; prints its URL. stop_nginx WORK stops it.
start_nginx() {
    local work=$1 root=$2 log=${3:-} port=$((20000 + RANDOM % 20000)) access="access_log off;"
    [ -n "$log" ] && access="log_format bytes '\$uri \$status \$body_bytes_sent'; access_log $log bytes;"
    mkdir -p "$work/nginx/logs" "$work/nginx/tmp"
    cat > "$work/nginx/nginx.conf" <<CONF
user root;
worker_processes 2;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    $access
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    server { listen 127.0.0.1:$port; root $root; }
}
CONF
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
    sleep 0.5
    echo "http://127.0.0.1:$port"
}

stop_nginx() {
    [ -f "$1/nginx/nginx.pid" ] && kill "$(cat "$1/nginx/nginx.pid")" 2>/dev/null || true
}
