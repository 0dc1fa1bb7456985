#!/bin/bash
# sealtree-test-agent: in the installed Debian test system, once startup
# has settled, reports what the booted system sees
# (its own serial line, ttyS1; the console is ttyS0) and runs the plan
# the harness put on the second disk (/dev/vdb). The
# plan ends the boot itself (poweroff, reboot, or AGENT-KILL: the harness
# cuts the power). RESULT lines are read by tests/vm/real.sh.
export PATH=/usr/sbin:/usr/bin SEALTREE_REPO=/sysroot/sealtree/repo
exec > /dev/ttyS1 2>&1
# Named on the command line, or (a sealed UKI) recorded by prepare-root.
booted=$(sed -n 's/.*sealtree=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$booted" ] || booted=$(cat /run/sealtree/booted 2>/dev/null)
state=$(timeout 600 systemctl is-system-running --wait)
echo "AGENT: booted $booted state $state"
echo "AGENT: failed units: $(systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
grep ' / ' /proc/mounts | sed 's/^/AGENT: mount: /'

# check NAME COMMAND...: one RESULT line.
check() {
    local name=$1
    shift
    if "$@"; then echo "RESULT pass $name"; else echo "RESULT fail $name"; fi
}

# A systemd-boot variable as text (UTF-16 after 4 bytes of attributes).
loader_var() {
    local var=/sys/firmware/efi/efivars/$1-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
    [ -e "$var" ] && cat "$var" | tail -c +5 | tr -d '\000'
}

# The path systemd-boot counted this boot under (empty if none).
boot_count_path() {
    loader_var LoaderBootCountPath
}

# Wait (up to S seconds) until the booted entry has no counter.
wait_blessed() {
    local i
    for i in $(seq "${1:-120}"); do
        ls /sysroot/boot/loader/entries/ /sysroot/boot/EFI/Linux/ 2>/dev/null |
            grep -qE "^sealtree-[0-9]+-$booted\.(conf|efi)$" && return 0
        sleep 1
    done
    return 1
}

# The default deployment (the first entry the loader would try).
default_id() {
    sealtree admin status | awk '/^[^ ]+ .*default/ { print $1; exit }'
}

commit_of() {
    sed -n 's/.*"commit": "\(.*\)".*/\1/p' "/sysroot/sealtree/deploy/$1/deployment.json" 2>/dev/null
}

# Every boot entry on the ESP names a kernel and initramfs that exist and
# a deployment whose image has its recorded digest and whose signature
# verifies; there is at least one entry, and status works.
verify_all() {
    local f id linux initrd want got n=0
    sealtree admin status --json > /run/status.json || { echo "AGENT: status fails"; return 1; }
    if grep -q '"state": "invalid"' /run/status.json; then
        echo "AGENT: a signature does not verify"
        return 1
    fi
    for f in /sysroot/boot/loader/entries/sealtree-*.conf; do
        [ -e "$f" ] || break
        n=$((n + 1))
        linux=$(awk '$1 == "linux" { print $2 }' "$f")
        initrd=$(awk '$1 == "initrd" { print $2 }' "$f")
        id=$(sed -n 's/^options .*sealtree=\([^ ]*\).*/\1/p' "$f")
        if ! [ -s "/sysroot/boot$linux" ] || ! [ -s "/sysroot/boot$initrd" ]; then
            echo "AGENT: $f: kernel or initramfs missing"
            return 1
        fi
        want=$(sed -n 's/.*"image_digest": "\(.*\)".*/\1/p' "/sysroot/sealtree/deploy/$id/deployment.json" 2>/dev/null)
        got=$(sealtree digest "/sysroot/sealtree/deploy/$id/image.cfs" 2>/dev/null | sed 's/^sha256:\([0-9a-f]*\) .*/\1/')
        if [ -z "$want" ] || [ "$want" != "$got" ]; then
            echo "AGENT: $f: deployment $id missing or its image does not verify"
            return 1
        fi
    done
    [ "$n" -gt 0 ] || { echo "AGENT: no boot entries"; return 1; }
}

dd if=/dev/vdb bs=65536 count=16 2>/dev/null | tr -d '\000' > /run/plan.sh
. /run/plan.sh
