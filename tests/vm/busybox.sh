# Sourced by run.sh: busybox deployments booted from the kernel,
# initramfs and options of their boot entries (the harness reads each
# entry as the loader would): a good boot, refusals, a damaged object,
# rollback and staging.
say "initramfs (dracut, kernel $KVER)"
cp -r /usr/lib/dracut "$work/dracut"
cp -rL dracut/50sealtree "$work/dracut/modules.d/50sealtree"
mkdir -p "$work/initrd-etc/trusted.d"
cp "$work/k.pub" "$work/initrd-etc/trusted.d/k.pub"
printf 'signature = required\nverity = require\n' > "$work/initrd-etc/prepare-root.conf"
initramfs() {
    local out=$1
    shift
    SEALTREE_BINARY="$ST" dracutbasedir="$work/dracut" dracut --quiet --no-hostonly --force \
        --kver "$KVER" --kmoddir "$KDIR/root/lib/modules/$KVER" \
        --modules "base systemd systemd-initrd dracut-systemd rootfs-block udev-rules sealtree" \
        --add-drivers "virtio_blk virtio_pci ext4 erofs overlay loop" \
        --include "$work/initrd-etc" /etc/sealtree --compress "gzip -1" "$@" "$out"
}
initramfs "$work/initramfs.img"
initramfs "$work/setup.img" --include tests/vm/setup-hook.sh /lib/dracut/hooks/pre-pivot/90-sealtree-setup.sh

# make_os DIR VERSION: busybox, sealtree, the test agent as /sbin/init,
# the kernel and the initramfs under usr/lib/modules/KVER.
make_os() {
    local t=$1 v=$2
    rm -rf "$t"
    mkdir -p "$t"/usr/{bin,lib64,etc,share} "$t/usr/lib/modules/$KVER" "$t"/{etc,var,sysroot,proc,sys,dev,run,tmp}
    ln -s usr/bin "$t/bin"
    ln -s usr/bin "$t/sbin"
    ln -s usr/lib "$t/lib"
    ln -s usr/lib64 "$t/lib64"
    cp /bin/busybox "$t/usr/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ -e "$t/usr/bin/$applet" ] || ln -s busybox "$t/usr/bin/$applet"
    done
    cp "$ST" "$t/usr/bin/sealtree"
    for lib in $(ldd "$ST" | grep -o '/[^ ]*'); do
        mkdir -p "$t/usr$(dirname "${lib#/usr}")"
        cp -L "$lib" "$t/usr${lib#/usr}"
    done
    cp tests/vm/agent.sh "$t/usr/bin/sealtree-agent"
    chmod 755 "$t/usr/bin/sealtree-agent"
    ln -sf sealtree-agent "$t/usr/bin/init"
    printf 'NAME=sealtree-test\nVERSION_ID=%s\n' "$v" > "$t/usr/lib/os-release"
    echo "sealtree-vm" > "$t/usr/etc/hostname"
    # (Process substitution: yes ends by SIGPIPE, which pipefail would see.)
    head -c 100000 < <(yes "tool of version $v") > "$t/usr/bin/tool"
    head -c 300000 < <(yes "victim of version $v") > "$t/usr/share/victim"
    cp "$KDIR/vmlinuz" "$t/usr/lib/modules/$KVER/vmlinuz"
    cp "$work/initramfs.img" "$t/usr/lib/modules/$KVER/initramfs.img"
}

say "sysroot: commits and deployments"
sys="$work/disk"
export SEALTREE_SYSROOT="$sys" SEALTREE_REPO="$sys/sealtree/repo"
admin() { "$ST" admin --cmdline /dev/null "$@"; }
admin init --trusted "$work/k.pub" --trusted "$work/u.pub" \
    --karg root=/dev/vda --karg rw --karg console=ttyS0 --karg panic=-1
deploy() { admin deploy "$1" | awk '/^deployed /{print $2}'; }
commit() { # BRANCH VERSION [KEY]
    make_os "$work/tree-$2" "$2"
    "$ST" commit -b "$1" --tree "$work/tree-$2" -m "version $2" ${3:+--sign-key "$3"} >/dev/null
}
commit untrusted 91 "$work/u.sec"; D_u=$(deploy untrusted)
commit unsigned 92; D_n=$(deploy unsigned)
commit tampered 93 "$work/k.sec"; D_t=$(deploy tampered)
commit os 1 "$work/k.sec"; D1=$(deploy os)
commit os 2 "$work/k.sec"; D2=$(deploy os)
commit next 3 "$work/k.sec"
C3=$("$ST" show next | awk '/^commit /{print $2}')
admin status | grep -v '^    kargs'
tool2=$(sha256sum "$work/tree-2/usr/bin/tool" | cut -d' ' -f1)
victim=$("$ST" digest "$work/tree-2/usr/share/victim" | sed 's/^sha256:\([0-9a-f]*\) .*/\1/')

say "disk image (ext4 with the verity feature)"
size=$(( $(du -sm "$sys" | cut -f1) * 3 / 2 + 300 ))
mkfs.ext4 -q -O verity -L sealroot -d "$sys" "$work/disk.img" "${size}M"

# entry ID|default: kernel, initramfs and options of a boot entry, read
# from the disk as the boot loader would.
entry() {
    mount -o ro "$work/disk.img" "$mnt"
    local file
    # Entries are sealtree-GEN-ID(+counter).conf: the default has the
    # highest generation.
    local dir="$mnt/boot/loader/entries"
    if [ "$1" = default ]; then
        file=$dir/$(ls "$dir" | grep -E '^sealtree-[0-9]+-' | sort -t- -k2,2n | tail -1)
    else
        file=$dir/$(ls "$dir" | grep -E "^sealtree-[0-9]+-$1[+.]")
    fi
    E_LINUX="$work/boot-vmlinuz" E_INITRD="$work/boot-initramfs.img"
    cp "$mnt$(awk '$1=="linux"{print $2}' "$file")" "$E_LINUX"
    cp "$mnt$(awk '$1=="initrd"{print $2}' "$file")" "$E_INITRD"
    E_OPTIONS=$(sed -n 's/^options //p' "$file")
    E_FILE=$(basename "$file")
    umount "$mnt"
}

# boot NAME KERNEL INITRD OPTIONS PLANFILE: boot until the agent or the
# setup is done, prepare-root refuses, or qemu exits; the serial log is
# $work/NAME.log.
boot() {
    local name=$1 log="$work/$1.log"
    rm -f "$work/plan.img"
    truncate -s 1M "$work/plan.img"
    dd if="$5" of="$work/plan.img" conv=notrunc status=none
    say "boot $name: $4"
    local start=$SECONDS
    qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 -display none -no-reboot \
        -serial "file:$log" -kernel "$2" -initrd "$3" -append "$4" \
        -drive "file=$work/disk.img,format=raw,if=virtio" \
        -drive "file=$work/plan.img,format=raw,if=virtio,readonly=on" &
    local qemu=$!
    while kill -0 "$qemu" 2>/dev/null; do
        if grep -qE 'AGENT-DONE|SETUP-(DONE|FAILED)' "$log" 2>/dev/null; then
            wait "$qemu" || true
            break
        fi
        if grep -q 'sealtree-prepare-root: FAILED' "$log" 2>/dev/null; then
            # Long enough for a wrongly continued boot to show.
            sleep 20
            kill "$qemu"
            wait "$qemu" || true
            break
        fi
        if [ $((SECONDS - start)) -gt "$TIMEOUT" ]; then
            echo "boot $name: no result after $TIMEOUT s" >&2
            kill "$qemu"
            wait "$qemu" || true
            break
        fi
        sleep 2
    done
    say "boot $name: $((SECONDS - start)) s"
    grep -E 'sealtree-prepare-root|^AGENT|^RESULT|SETUP' "$log" | tr -d '\r' | sed 's/^\[ *[0-9.]*\] //' || true
}


say "one-time setup: fs-verity on for every object and image"
echo ': nothing to do' > "$work/plan0"
boot setup "$KDIR/vmlinuz" "$work/setup.img" "root=/dev/vda rw console=ttyS0 panic=-1" "$work/plan0"
grep -q SETUP-DONE "$work/setup.log" || { echo "setup failed"; tail -50 "$work/setup.log"; exit 1; }

say "corrupting object $victim on the disk (usr/share/victim of version 2)"
obj="/sealtree/repo/objects/${victim:0:2}/${victim:2}"
block=$(debugfs -R "blocks $obj" "$work/disk.img" 2>/dev/null | awk '{print $1}')
[ -n "$block" ] || { echo "no blocks for $obj"; exit 1; }
printf 'CORRUPTED' | dd of="$work/disk.img" bs=1 seek=$((block * 4096 + 4000)) conv=notrunc status=none

cat > "$work/plan1" <<PLAN
check "verify-1: good deployment: booted the default ($D2)" [ "\$booted" = "$D2" ]
check "verify-1: good deployment: / is the overlay with verity=require" grep -q '^composefs / overlay ro.*verity=require' /proc/mounts
check "verify-1: good deployment: a file's content equals the commit's" [ "\$(sha256sum /usr/bin/tool | cut -d' ' -f1)" = "$tool2" ]
check "verify-4: changed object: reading it fails with EIO" sh -c '! cat /usr/share/victim > /dev/null 2> /tmp/err && grep -Eq "I/O error|Input/output error" /tmp/err'
check "verify-4: changed object: other files read fine" sh -c 'cat /usr/bin/tool /usr/lib/os-release /usr/bin/sealtree > /dev/null'
# For scenario 3: an attacker with root replaces a deployment's image.
cp /sysroot/sealtree/deploy/$D1/image.cfs /sysroot/sealtree/deploy/$D_t/image.new
mv -f /sysroot/sealtree/deploy/$D_t/image.new /sysroot/sealtree/deploy/$D_t/image.cfs
check "verify-5: rollback: admin rollback" sealtree admin rollback
PLAN
entry default
boot good "$E_LINUX" "$E_INITRD" "$E_OPTIONS" "$work/plan1"
results "$work/good.log"
timings=$(grep -a 'sealtree-prepare-root' "$work/good.log" | grep -av 'sealtree\[' | tr -d '\r' | sed 's/^\[ *[0-9.]*\] //' | awk '!seen[$0]++')

cat > "$work/plan2" <<PLAN
check "verify-5: rollback: the previous deployment ($D1) boots" [ "\$booted" = "$D1" ]
check "verify-5: rollback: its content is version 1" grep -q VERSION_ID=1 /usr/lib/os-release
check "verify-7: staged: admin deploy --stage" sealtree admin deploy --stage next
# What sealtree-finalize-staged.service runs at shutdown.
check "verify-7: staged: finalized at shutdown" sealtree admin finalize-staged
PLAN
entry default
boot rollback "$E_LINUX" "$E_INITRD" "$E_OPTIONS" "$work/plan2"
results "$work/rollback.log"

cat > "$work/plan3" <<PLAN
check "verify-7: staged: the staged deployment boots next" grep -q '"commit": "$C3"' /sysroot/sealtree/deploy/\$booted/deployment.json
check "verify-7: staged: its content is version 3" grep -q VERSION_ID=3 /usr/lib/os-release
PLAN
entry default
boot staged "$E_LINUX" "$E_INITRD" "$E_OPTIONS" "$work/plan3"
results "$work/staged.log"

# refused NAME ID EXPECTED...: boot the entry of ID; prepare-root must
# refuse with one line holding every EXPECTED string, and the system must
# not come up.
refused() {
    local name=$1 id=$2
    shift 2
    echo ': should never run' > "$work/plan-$name"
    entry "$id"
    boot "$name" "$E_LINUX" "$E_INITRD" "$E_OPTIONS" "$work/plan-$name"
    local line
    line=$({ grep -a -m1 'sealtree-prepare-root: FAILED' "$work/$name.log" || true; } | tr -d '\r')
    local ok=pass why=""
    [ -n "$line" ] || { ok=fail; why="no refusal"; }
    for want in "$@"; do
        case "$line" in *"$want"*) ;; *) ok=fail; why="refusal lacks '$want': $line" ;; esac
    done
    if grep -aq '^AGENT' "$work/$name.log"; then ok=fail; why="the system came up"; fi
    result "$name" "$ok" "$why"
}
u_key=$(cat "$work/u.pub")
refused "verify-2: untrusted key: boot refused naming the key" "$D_u" "FAILED: signature" "$u_key"
t_signed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_digest"])' "$work/disk/sealtree/deploy/$D_t/statement.json")
d1_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_digest"])' "$work/disk/sealtree/deploy/$D1/deployment.json")
refused "verify-3: image modified after signing: refused naming both digests" "$D_t" "FAILED: image digest" "$t_signed" "$d1_digest"
refused "verify-6: unsigned, policy signature=required: refused" "$D_n" "FAILED: signature" "unsigned"

say "prepare-root timings (scenario 1)"
echo "$timings"
