# Sourced by run.sh: the sealed boot chain. OVMF enforcing Secure Boot
# with Debian's snakeoil test key enrolled; systemd-boot signed with it;
# Debian trees whose initramfs (dracut, sealtree module) trusts key k
# and allows `branch = os/stable`, made into UKIs by `sealtree uki
# build` and signed with the snakeoil key; installed with `sealtree
# admin install --disk`. Scenarios sealed-1 .. sealed-7.
#
# A deployment refused at boot costs three tries before the loader gives
# up on it; real-3 and sealed-2 show that fallback. For sealed-3 and
# sealed-4 one refused boot shows the refusal, and the harness then
# removes the refused entry from the ESP (mtools) to go on.

R="$work/sealed"
mkdir -p "$R"
source tests/vm/debian.sh
T="$R/tree"
export SECURE_BOOT=1
openssl pkey -in "$SB_KEY_ENCRYPTED" -passin pass:snakeoil -out "$R/sb.key"
sbsign --key "$R/sb.key" --cert "$SB_CERT" --output "$R/systemd-bootx64.efi" \
    /usr/lib/systemd/boot/efi/systemd-bootx64.efi 2>/dev/null

say "sealed: Debian test system, initramfs policy branch = os/stable"
POLICY='signature = required\nverity = require\nbranch = os/stable\n' debian_tree "$T" "$work/k.pub"
cp "$T/etc/shadow" "$R/shadow"
# suki: the UKI of the tree as it is now, signed with the snakeoil key
# (its command line gets rd.shell=0 rd.emergency=reboot).
suki() { "$ST" uki build "$T" --sb-key "$R/sb.key" --sb-cert "$SB_CERT" --cmdline "rw console=ttyS0"; }
suki
export SEALTREE_REPO="$R/build-repo"
"$ST" init >/dev/null
scommit() { # BRANCH VERSION: prints the commit id
    echo "$2" > "$T/usr/lib/sealtree-test-version"
    "$ST" commit -b "$1" --tree "$T" -m "sealed $2" --sign-key "$work/k.sec"
}
C1=$(scommit os/stable 1)
"$ST" publish --sign-key "$work/k.sec" >/dev/null
say "admin install --disk, systemd-boot signed with the snakeoil key"
"$ST" admin install --disk "$R/disk.img" --size 4G --source "$R/build-repo" \
    --branch os/stable --trusted "$work/k.pub" --loader "$R/systemd-bootx64.efi" | tee "$R/install.log"
D1=$(awk '/^install: deployed /{print $3}' "$R/install.log")
DISK="$R/disk.img"
C2=$(scommit os/stable 2)
# A debug build: root without a password, signed by the same key.
sed -i 's/^root:[^:]*:/root::/' "$T/etc/shadow"
C3=$(scommit os/debug 3)
cp "$R/shadow" "$T/etc/shadow"
say "sealed: a second UKI whose policy is branch = os/transient, etc = transient"
printf 'signature = required\nverity = require\nbranch = os/transient\netc = transient\n' \
    > "$T/etc/sealtree/prepare-root.conf"
# The image's /etc is all there is: it mounts the ESP itself.
echo 'PARTLABEL=ESP /sysroot/boot vfat umask=0077,shortname=winnt,flush 0 2' >> "$T/etc/fstab"
echo sealtree-transient > "$T/etc/hostname"
tree_initramfs "$T"
suki
C4=$(scommit os/transient 4)
"$ST" publish --sign-key "$work/k.sec" >/dev/null
usb_disk "$R/build-repo" "$R/usb.img"
unset SEALTREE_REPO
rm -rf "$T"

cat > "$R/plan-first" <<PLAN
check "sealed-1: the sealed deployment boots ($D1)" [ "\$booted" = "$D1" ]
check "sealed-1: the kernel logs Secure boot enabled" sh -c 'dmesg | grep -q "Secure boot enabled"'
check "sealed-1: the command line is the UKI's: \$(cat /proc/cmdline)" grep -qx 'rw console=ttyS0 rd.shell=0 rd.emergency=reboot' /proc/cmdline
check "sealed-1: prepare-root verified and mounted it as a sealed UKI" sh -c 'dmesg | grep -q "root is deployment $D1 (sealed UKI)"'
check "sealed-1: / is the composefs overlay with verity=require" grep -q '^composefs / overlay ro.*verity=require' /proc/mounts
bcp=\$(boot_count_path)
check "sealed-1: the loader counted the UKI entry: \$bcp" grep -q 'EFI.Linux.sealtree-1-$D1+2-1.efi' <<< "\$bcp"
check "sealed-1: blessed after boot-complete.target (EFI/Linux/sealtree-1-$D1.efi)" wait_blessed 300
for m in /etc /var; do
    check "sealed-6: \$m is mounted nosuid,nodev: \$(findmnt -no OPTIONS \$m)" sh -c "findmnt -no OPTIONS \$m | grep nosuid | grep -q nodev"
done
install -m 4755 -o root /usr/bin/id /var/tmp/suid-id
euid=\$(setpriv --reuid=65534 --regid=65534 --clear-groups /var/tmp/suid-id -u)
check "sealed-6: a setuid-root binary planted in /var runs as nobody: euid \$euid" [ "\$euid" = 65534 ]
mknod /var/tmp/zero c 1 5
err=\$(head -c1 /var/tmp/zero 2>&1 >/dev/null)
check "sealed-6: a device node planted in /var does not open: \$err" sh -c '! head -c1 /var/tmp/zero >/dev/null 2>&1'
mount -o ro /dev/vdc /mnt
sealtree remote add usb file:///mnt/repo --trusted /sysroot/sealtree/trusted.d
for b in os/stable os/debug os/transient; do sealtree pull usb \$b | sed 's/^/AGENT: /'; done
umount /mnt
sealtree admin deploy usb/os/stable > /run/deployed
echo "AGENT: deployed \$(awk '/^deployed /{print \$2}' /run/deployed)"
systemctl poweroff
PLAN
say "sealed-1, sealed-6: first boot under Secure Boot"
qboot first "$R/plan-first" "$DISK" "$R/usb.img"
results "$R/first.agent"
D2=$(tr -d '\r' < "$R/first.agent" | sed -n 's/^AGENT: deployed //p')
echo "ESP entries: $(esp_entries "$DISK" | tr '\n' ' ')"

say "sealed-2: D2's UKI with one byte changed, and unsigned, as newer entries"
esp "$DISK" mcopy -n "::/EFI/Linux/sealtree-2-$D2+3.efi" "$R/d2.efi"
cp "$R/d2.efi" "$R/flipped.efi"
python3 - "$R/flipped.efi" <<'PY'
import sys
f = open(sys.argv[1], 'r+b'); f.seek(0, 2); at = f.tell() // 2
f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 0x01]))
PY
cp "$R/d2.efi" "$R/unsigned.efi"
sbattach --remove "$R/unsigned.efi"
esp "$DISK" mcopy "$R/flipped.efi" "::/EFI/Linux/sealtree-90-$D2+3.efi"
esp "$DISK" mcopy "$R/unsigned.efi" "::/EFI/Linux/sealtree-91-$D2+3.efi"
cat > "$R/plan-d2" <<PLAN
check "sealed-2: after the firmware refused them, the loader fell back to the previous entry, $D2" [ "\$booted" = "$D2" ]
wait_blessed 300
sealtree admin deploy $C2 > /run/deployed
D3=\$(awk '/^deployed /{print \$2}' /run/deployed)
# Someone with the disk: the older deployment's image and statement.
for f in image.cfs statement.json statement.sig; do
    cp /sysroot/sealtree/deploy/$D1/\$f /sysroot/sealtree/deploy/\$D3/\$f.new
    mv -f /sysroot/sealtree/deploy/\$D3/\$f.new /sysroot/sealtree/deploy/\$D3/\$f
done
sync
check "sealed-3: admin status reports \$D3's statement as another deployment's" sh -c "sealtree admin status --json | grep -q 'its signed statement names commit $C1'"
echo "AGENT: swapped \$D3"
systemctl poweroff
PLAN
refused=0 unsigned=0 flipped=0
for i in 1 2 3 4 5 6 7 8; do
    qboot "fallback-$i" "$R/plan-d2" "$DISK"
    [ "$BOOTED" = "$D2" ] && break
    if grep -aqE 'Error loading .*sealtree-91-.*(Security Violation|Access Denied)' "$R/fallback-$i.log"; then
        unsigned=$((unsigned + 1))
    elif grep -aqE 'Error loading .*sealtree-90-.*(Security Violation|Access Denied)' "$R/fallback-$i.log"; then
        flipped=$((flipped + 1))
    fi
done
grep -ahoE 'Error loading [^:]*: [A-Za-z ]*' "$R"/fallback-*.log | tr -d '\r' | sort | uniq -c | sed 's/^/== /' || true
name="sealed-2: the unsigned UKI refused by the firmware 3 times, the one-byte-changed one 3 times, then $D2 booted"
if [ "$unsigned" = 3 ] && [ "$flipped" = 3 ] && [ "$BOOTED" = "$D2" ]; then
    result "$name" pass
else
    result "$name" fail "unsigned refused $unsigned, changed refused $flipped, then booted ${BOOTED:-nothing}"
fi
results "$R/$(basename "$(ls -t "$R"/fallback-*.agent | head -1)")"
D3=$(cat "$R"/fallback-*.agent | tr -d '\r' | sed -n 's/^AGENT: swapped //p' | tail -1)

# refused_boot NAME SCENARIO EXPECT: one boot of the default entry, which
# prepare-root must refuse with a line containing EXPECT; then the
# refused entry is removed from the ESP.
refused_boot() {
    local name=$1 scenario=$2 expect=$3 id=$4
    qboot "$name" "$R/plan-d2" "$DISK"
    local line
    line=$(log_line 'sealtree-prepare-root: FAILED' "$R/$name.log")
    if [ -z "$BOOTED" ] && grep -qF "$expect" <<< "$line"; then
        result "$scenario: $line" pass
    else
        result "$scenario" fail "booted ${BOOTED:-nothing}; refusal: ${line:-none}; expected: $expect"
    fi
    esp "$DISK" mdel "::/EFI/Linux/sealtree-*-$id+*.efi"
}
say "sealed-3: deployment $D3 (commit $C2) holding $D1's image and statement"
refused_boot swapped "sealed-3: refused at boot, naming both commits" \
    "binding: deployment $D3 is of commit ${C2:0:12}…, but its signed statement names commit $C1" "$D3"

cat > "$R/plan-d2" <<PLAN
check "sealed-3: back on $D2" [ "\$booted" = "$D2" ]
sealtree admin undeploy $D3
sealtree admin deploy $C3 > /run/deployed
systemctl poweroff
PLAN
qboot back-1 "$R/plan-d2" "$DISK"
results "$R/back-1.agent"
D4=$(esp_entries "$DISK" | sed -n 's/^sealtree-[0-9]*-\([0-9a-f]*\.[0-9]*\)+3\.efi$/\1/p' | head -1)
say "sealed-4: deployment $D4 of branch os/debug (commit $C3), signed by the trusted key"
refused_boot debug "sealed-4: refused under branch = os/stable" \
    "branch: deployment $D4 (commit $C3) is of branch 'os/debug'; the policy allows only 'os/stable'" "$D4"

cat > "$R/plan-d2" <<PLAN
check "sealed-4: back on $D2" [ "\$booted" = "$D2" ]
sealtree admin undeploy $D4
sealtree admin deploy $C4 > /run/deployed
echo "AGENT: deployed \$(awk '/^deployed /{print \$2}' /run/deployed)"
# The loader's options edited: a type 1 entry that starts D2's signed UKI
# with its own options, chosen for the next boot.
uki=\$(cd /sysroot/boot && ls EFI/Linux/sealtree-*-$D2*.efi | head -1)
printf 'title edited\nefi /%s\noptions rw init=/bin/sh console=ttyS0\n' "\$uki" > /sysroot/boot/loader/entries/edited.conf
var=/sys/firmware/efi/efivars/LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
{ printf '\x07\x00\x00\x00'; printf 'edited.conf\0' | iconv -f ascii -t UTF-16LE; } > /run/oneshot
cat /run/oneshot > \$var
sync
systemctl poweroff
PLAN
qboot back-2 "$R/plan-d2" "$DISK"
results "$R/back-2.agent"
D5=$(tr -d '\r' < "$R/back-2.agent" | sed -n 's/^AGENT: deployed //p')

say "sealed-5: the loader starts $D2's UKI with 'rw init=/bin/sh' and no sealtree="
qboot edited "$R/plan-d2" "$DISK"
cmdline=$(log_line 'Command line:' "$R/edited.log" | sed 's/.*Command line: //')
refusal=$(log_line 'sealtree-prepare-root: FAILED' "$R/edited.log")
name="sealed-5: edited options ignored (kernel command line '$cmdline'); ${refusal:-booted ${BOOTED:-nothing}}"
if [ "$cmdline" = "rw console=ttyS0 rd.shell=0 rd.emergency=reboot" ] &&
    { [ -n "$refusal" ] || [ "$BOOTED" = "$D2" ]; }; then
    result "$name" pass
else
    result "$name" fail "never an unverified root: the UKI's command line must hold, and prepare-root verify or refuse"
fi

cat > "$R/plan-transient" <<PLAN
check "sealed-7: the etc = transient deployment boots ($D5)" [ "\$booted" = "$D5" ]
check "sealed-7: /etc is an overlay over the image's /etc: \$(findmnt -no FSTYPE,OPTIONS /etc)" sh -c 'findmnt -no FSTYPE /etc | grep -q overlay'
check "sealed-7: the ESP is mounted at /sysroot/boot (fstab from the image)" mountpoint -q /sysroot/boot
wait_blessed 300
echo "written in the first boot" > /etc/sealtree-transient-test
echo edited-hostname > /etc/hostname
systemctl reboot
PLAN
qboot transient-1 "$R/plan-transient" "$DISK"
results "$R/transient-1.agent"
cat > "$R/plan-transient" <<PLAN
check "sealed-7: after a reboot the file written to /etc is gone" [ ! -e /etc/sealtree-transient-test ]
check "sealed-7: the image's /etc/hostname is back: \$(cat /etc/hostname)" grep -qx sealtree-transient /etc/hostname
systemctl poweroff
PLAN
qboot transient-2 "$R/plan-transient" "$DISK"
results "$R/transient-2.agent"
echo "ESP entries: $(esp_entries "$DISK" | tr '\n' ' ')"
