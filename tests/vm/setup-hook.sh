#!/bin/sh
# dracut pre-pivot hook of the one-time setup initramfs: with the disk
# mounted at /sysroot, turn fs-verity on for everything the sysroot
# boots from (the disk was built on a machine without fs-verity), then
# power off.
if /usr/bin/sealtree admin --sysroot /sysroot --cmdline /dev/null enable-verity > /dev/console 2>&1; then
    echo "SETUP-DONE" > /dev/console
else
    echo "SETUP-FAILED" > /dev/console
fi
# sealtree syncs what it changed; sysrq s/u/o: sync, read-only, off.
echo s > /proc/sysrq-trigger
echo u > /proc/sysrq-trigger
sleep 1
echo o > /proc/sysrq-trigger
