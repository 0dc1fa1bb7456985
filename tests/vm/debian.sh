# Sourced by tests/vm/real.sh and demo/run: a Debian test system with
# sealtree in it, and booting a disk through OVMF and systemd-boot.
#
# Needs: $ST (the sealtree binary), $R (a work directory). Optional:
# $TIMEOUT (seconds one boot may take, default 900).

OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
# With SECURE_BOOT=1: firmware that enforces Secure Boot, with Debian's
# snakeoil test key enrolled (PK, KEK, db).
OVMF_CODE_SB=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
OVMF_VARS_SB=/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd
SB_KEY_ENCRYPTED=/usr/share/ovmf/PkKek-1-snakeoil.key
SB_CERT=/usr/share/ovmf/PkKek-1-snakeoil.pem
# Where admin install puts the ESP on a disk.
ESP_OFFSET=$((2048 * 512))

# debian_tree DIR KEY.pub: the mmdebstrap'd Debian (tests/vm/debian-base.sh)
# unpacked into DIR, with sealtree, its units, the test agent, and an
# initramfs made by dracut inside the tree with the sealtree module and
# KEY.pub as the key it trusts. $POLICY, if set, is the initramfs's
# prepare-root.conf. Sets DKVER to the kernel version.
debian_tree() {
    local t=$1 key=$2 base start
    base=$(bash tests/vm/debian-base.sh)
    rm -rf "$t"
    mkdir -p "$t"
    tar -C "$t" --xattrs --xattrs-include='*' --numeric-owner -xpf "$base"
    DKVER=$(ls "$t/usr/lib/modules")
    install -m 755 "$ST" "$t/usr/bin/sealtree"
    cp -rL dracut/50sealtree "$t/usr/lib/dracut/modules.d/50sealtree"
    mkdir -p "$t/etc/sealtree/trusted.d" "$t/sysroot"
    cp "$key" "$t/etc/sealtree/trusted.d/"
    printf '%b' "${POLICY:-signature = required\nverity = require\n}" > "$t/etc/sealtree/prepare-root.conf"
    cp systemd/sealtree-bless-boot.service systemd/sealtree-finalize-staged.service \
        tests/vm/sealtree-test-agent.service "$t/usr/lib/systemd/system/"
    install -m 755 tests/vm/real-agent.sh "$t/usr/bin/sealtree-test-agent"
    # The root is read-only: /tmp is a tmpfs.
    cp "$t/usr/share/systemd/tmp.mount" "$t/etc/systemd/system/tmp.mount"
    systemctl --root="$t" enable sealtree-bless-boot.service sealtree-finalize-staged.service \
        sealtree-test-agent.service tmp.mount 2>/dev/null
    echo sealtree-debian > "$t/etc/hostname"
    tree_initramfs "$t"
}

# tree_initramfs DIR: dracut inside the tree, as a distribution's build
# does; the keys and policy come from the tree's /etc/sealtree.
tree_initramfs() {
    local t=$1 start=$SECONDS
    unshare --mount --fork sh -c "mount -t proc proc '$t/proc' && mount --rbind /dev '$t/dev' &&
        mount --rbind /sys '$t/sys' &&
        chroot '$t' dracut --quiet --force --no-hostonly --kver '$DKVER' \
            --modules 'base systemd systemd-initrd dracut-systemd rootfs-block udev-rules sealtree' \
            --add-drivers 'virtio_blk virtio_pci ext4 erofs overlay loop efivarfs' \
            --compress 'gzip -1' '/boot/initrd.img-$DKVER'"
    echo "== initramfs: dracut in the tree, kernel $DKVER, sealtree module: $((SECONDS - start)) s"
}

# broken_release DIR: the tree gets a health check that fails, required
# by boot-complete.target: its boots are never blessed.
broken_release() {
    cat > "$1/usr/lib/systemd/system/sealtree-test-health.service" <<'UNIT'
[Unit]
Description=A health check that fails (boot tests: a broken release)
Before=boot-complete.target
[Service]
Type=oneshot
ExecStart=/bin/false
[Install]
RequiredBy=boot-complete.target
UNIT
    systemctl --root="$1" enable sealtree-test-health.service 2>/dev/null
}

# usb_disk REPO IMAGE: the "USB stick", a published repository as repo/ on
# an ext4 disk image.
usb_disk() {
    local dir=$R/usb
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -al "$1" "$dir/repo"
    mkfs.ext4 -q -L usb -d "$dir" "$2" "$(($(du -sm "$dir" | cut -f1) * 3 / 2 + 64))M"
}

# esp_entries DISK: the entry files on the disk's ESP (type 1 and UKIs),
# read with mtools.
esp_entries() {
    local dir
    for dir in loader/entries EFI/Linux; do
        # A directory the ESP does not have lists nothing.
        { MTOOLS_SKIP_CHECK=1 mdir -b -i "$1@@$ESP_OFFSET" "::/$dir" 2>/dev/null || true; } | sed 's|.*/||'
    done | sort
}

# esp DISK MTOOL ARGS...: an mtools command on the disk's ESP (::/PATH).
esp() {
    local disk=$1 tool=$2
    shift 2
    MTOOLS_SKIP_CHECK=1 "$tool" -i "$disk@@$ESP_OFFSET" "$@"
}

# log_line PATTERN LOG: the first line of a serial log matching PATTERN,
# without CR or the kernel's timestamp; empty when there is none. grep
# reads the file itself: with pipefail, a reader stopping early would kill
# a writer upstream (SIGPIPE) and the script with it.
log_line() {
    { grep -a -m1 -e "$1" "$2" || true; } | tr -d '\r' | sed 's/^\[ *[0-9.]*\] //'
}

# qboot NAME PLAN DISK [DISK...]: one boot of DISK through OVMF (its
# variables in $R/vars.fd, made on first use) and systemd-boot; PLAN goes
# to the agent on the second disk. The boot ends when qemu exits
# (poweroff; reboot, as -no-reboot), or the harness cuts the power: after
# AGENT-KILL from the agent, CUT_AFTER seconds after AGENT-CUT, or 15 s
# after a prepare-root refusal. Console: $R/NAME.log; agent (ttyS1):
# $R/NAME.agent; the booted deployment: $BOOTED; why it ended: $ENDED.
qboot() {
    local name=$1 plan=$2 disk=$3
    shift 3
    local log="$R/$name.log" alog="$R/$name.agent"
    local code=$OVMF_CODE machine=(-machine q35)
    if [ -n "${SECURE_BOOT:-}" ]; then
        code=$OVMF_CODE_SB
        machine=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
        [ -f "$R/vars.fd" ] || cp "$OVMF_VARS_SB" "$R/vars.fd"
    fi
    [ -f "$R/vars.fd" ] || cp "$OVMF_VARS" "$R/vars.fd"
    rm -f "$R/plan.img" "$log" "$alog"
    truncate -s 1M "$R/plan.img"
    dd if="$plan" of="$R/plan.img" conv=notrunc status=none
    local drives=(-drive "file=$disk,format=raw,if=virtio"
        -drive "file=$R/plan.img,format=raw,if=virtio,readonly=on")
    local d
    for d in "$@"; do drives+=(-drive "file=$d,format=raw,if=virtio"); done
    # With $TPM_STATE: a TPM 2.0 (swtpm, its state in that directory, kept
    # across boots as a real chip keeps it), started for this boot.
    local tpm=() swtpm_pid=""
    if [ -n "${TPM_STATE:-}" ]; then
        mkdir -p "$TPM_STATE"
        rm -f "$TPM_STATE/sock" "$TPM_STATE/pid"
        swtpm socket --tpm2 --tpmstate "dir=$TPM_STATE" --ctrl "type=unixio,path=$TPM_STATE/sock" \
            --pid "file=$TPM_STATE/pid" --log "file=$TPM_STATE/log,level=1" --terminate --daemon
        swtpm_pid=$(cat "$TPM_STATE/pid")
        tpm=(-chardev "socket,id=chrtpm,path=$TPM_STATE/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
            -device tpm-tis,tpmdev=tpm0)
    fi
    local start=$SECONDS t0 t_loader="" t_kernel="" t_up=""
    t0=$(date +%s.%N)
    ENDED="qemu exited"
    qemu-system-x86_64 "${machine[@]}" -accel tcg -cpu max -m 2048 -smp 2 -display none -no-reboot \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code" \
        -drive "if=pflash,format=raw,unit=1,file=$R/vars.fd" \
        "${drives[@]}" "${tpm[@]}" -serial "file:$log" -serial "file:$alog" &
    local qemu=$!
    while kill -0 "$qemu" 2>/dev/null; do
        local cut=""
        # When the firmware starts the loader, the loader the kernel, and
        # the system is up (as the serial lines first show them).
        [ -z "$t_loader" ] && grep -aq 'BdsDxe: starting' "$log" 2>/dev/null && t_loader=$(date +%s.%N)
        [ -z "$t_kernel" ] && grep -aq 'EFI stub: ' "$log" 2>/dev/null && t_kernel=$(date +%s.%N)
        [ -z "$t_up" ] && grep -aq '^AGENT: booted' "$alog" 2>/dev/null && t_up=$(date +%s.%N)
        if grep -aq '^AGENT-KILL' "$alog" 2>/dev/null; then
            cut="power cut after the agent asked"
        elif grep -aq '^AGENT-CUT' "$alog" 2>/dev/null; then
            sleep "${CUT_AFTER:-0}"
            cut="power cut ${CUT_AFTER:-0} s into the operation"
        elif grep -aqE 'Error loading .*(Security Violation|Access Denied)' "$log" 2>/dev/null; then
            sleep 1
            cut="power cut after the firmware refused the image"
        elif grep -aq 'sealtree-prepare-root: FAILED' "$log" 2>/dev/null; then
            # Long enough for a wrongly continued boot to show.
            sleep 15
            cut="power cut after the refusal"
        elif [ $((SECONDS - start)) -gt "${TIMEOUT:-900}" ]; then
            cut="no result after ${TIMEOUT:-900} s"
        fi
        if [ -n "$cut" ]; then
            kill -9 "$qemu" 2>/dev/null || true
            ENDED=$cut
            break
        fi
        sleep 0.2
    done
    wait "$qemu" 2>/dev/null || true
    [ -n "$swtpm_pid" ] && { kill "$swtpm_pid" 2>/dev/null || true; }
    BOOTED=$(tr -d '\r' < "$alog" | sed -n 's/^AGENT: booted \([^ ]*\) .*/\1/p' | tail -1)
    echo "== boot $name: $((SECONDS - start)) s, booted ${BOOTED:-nothing} ($ENDED)"
    if [ -n "$t_loader" ] && [ -n "$t_kernel" ]; then
        awk -v a="$t0" -v b="$t_loader" -v c="$t_kernel" -v d="${t_up:-}" 'BEGIN {
            printf "== boot %s timings: firmware %.1f s, systemd-boot %.1f s (3 s of it the menu timeout)", "'"$name"'", b - a, c - b
            if (d != "") printf ", kernel to the system up %.1f s", d - c
            printf "\n" }'
    fi
    tr -d '\r' < "$log" | sed 's/^\[ *[0-9.]*\] //' |
        grep -a -E '^sealtree-prepare-root|fs-verity enabled' | awk '!seen[$0]++' || true
    tr -d '\r' < "$alog" | grep -a -E '^(AGENT|RESULT)' || true
}
