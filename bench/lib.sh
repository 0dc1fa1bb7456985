# Shared by the bench scripts: a fresh filesystem per timed run, and one
# timing of a command line (seconds and peak RSS).
#
# Work that creates many files is timed on a fresh ext4 filesystem per
# run: on a reused one, ext4 skipping recently freed inodes swings the
# figures by up to 2x.

# fresh_fs WORK NAME [SIZE]: mount a new ext4 filesystem of SIZE (default
# 4G) at WORK/NAME and print that path; unmounted by cleanup_fs WORK.
fresh_fs() {
    local work=$1 name=$2 size=${3:-4G}
    truncate -s "$size" "$work/$name.img"
    mkfs.ext4 -q -F "$work/$name.img"
    mkdir -p "$work/$name"
    mount -o loop "$work/$name.img" "$work/$name"
    echo "$work/$name"
}

# cleanup_fs WORK: unmount every filesystem fresh_fs mounted under WORK.
cleanup_fs() {
    local work=$1 m
    for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do
        umount "$m" || umount -l "$m"
    done
}

# timed OUT CMD...: run CMD (output discarded), writing "SECONDS PEAK_KIB"
# to OUT.
timed() {
    local out=$1
    shift
    /usr/bin/time -f '%e %M' -o "$out" "$@" > /dev/null
}
