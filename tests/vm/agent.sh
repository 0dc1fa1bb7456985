#!/bin/sh
# /sbin/init of the test OS: reports what the booted system sees on the
# serial console, runs the plan the harness put on the second disk, and
# powers off. RESULT lines are read by tests/vm/run.sh.
export PATH=/usr/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
mount -t tmpfs tmpfs /tmp 2>/dev/null
booted=$(sed -n 's/.*sealtree=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "AGENT: booted deployment $booted"
grep ' / ' /proc/mounts | sed 's/^/AGENT: mount: /'

# check NAME COMMAND...: one RESULT line.
check() {
    name=$1
    shift
    if "$@"; then echo "RESULT pass $name"; else echo "RESULT fail $name"; fi
}

dd if=/dev/vdb bs=65536 count=16 2>/dev/null | tr -d '\000' > /run/plan.sh
. /run/plan.sh
sync
# Sync and remount everything read-only, so the disk is clean when the
# harness reads it.
echo s > /proc/sysrq-trigger
echo u > /proc/sysrq-trigger
sleep 1
echo "AGENT-DONE"
poweroff -f
