#!/usr/bin/env bash
# Boot tests under qemu (TCG), each scenario one PASS/FAIL line, the last
# line 'N passed, N failed'. Needs root; installs its packages itself.
#
#   busybox.sh  a Debian 6.12 kernel and a dracut initramfs with the
#               sealtree module boot small busybox deployments from an
#               ext4 disk with fs-verity (kernel, initramfs and options
#               read from each boot entry): verification and refusals
#   real.sh     Debian bookworm built with mmdebstrap, installed with
#               `sealtree admin install` on a disk image and booted by
#               OVMF and systemd-boot: boot counting, fallback, upgrades
#
#   sealed.sh   the sealed chain: Secure Boot (OVMF with test keys), UKIs
#               built and signed by `sealtree uki build`, statements bound
#               to their deployment and branch, nosuid/nodev, etc=transient
#   epoch.sh    anti-rollback: security epochs against a floor kept in the
#               machine's TPM (swtpm), raised only after a blessed boot
#
#   VM_ONLY=busybox|real|sealed|epoch   run one part
#   VM_KEEP=1      keep the work directory (disk images, serial logs)
#   VM_TIMEOUT=S   seconds one boot may take (default 900)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bash tests/vm/install-deps.sh
KDIR=${VM_KERNEL_DIR:-/var/cache/sealtree-vm/kernel}
KVER=$(cat "$KDIR/version")
TIMEOUT=${VM_TIMEOUT:-900}
cargo build --release --quiet
ST="$root/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-vm.XXXXXX)
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
    mountpoint -q "$mnt" && umount "$mnt"
    if [ -n "${VM_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
say() { echo "== $*"; }

passed=0
failed=0
# result NAME pass|fail [DETAIL]
result() {
    if [ "$2" = pass ]; then
        passed=$((passed + 1))
        echo "PASS $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1${3:+: $3}"
    fi
}

# results FILE: the agent's RESULT lines in FILE, as scenario results.
results() {
    local line status name
    while read -r line; do
        status=$(echo "$line" | awk '{print $2}')
        name=$(echo "$line" | cut -d' ' -f3-)
        result "$name" "$status"
    done < <(tr -d '\r' < "$1" | grep -a '^RESULT')
}

say "keys: k (trusted by the initramfs), u (trusted by the sysroot only)"
"$ST" key generate --secret "$work/k.sec" --public "$work/k.pub" >/dev/null
"$ST" key generate --secret "$work/u.sec" --public "$work/u.pub" >/dev/null

case ${VM_ONLY:-all} in all | busybox) source tests/vm/busybox.sh ;; esac
case ${VM_ONLY:-all} in all | real) source tests/vm/real.sh ;; esac
case ${VM_ONLY:-all} in all | sealed) source tests/vm/sealed.sh ;; esac
case ${VM_ONLY:-all} in all | epoch) source tests/vm/epoch.sh ;; esac

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
