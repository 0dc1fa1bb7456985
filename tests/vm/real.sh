# Sourced by run.sh: a real distribution through a real boot loader.
# Debian bookworm (tests/vm/debian-base.sh) with the sealtree dracut
# module run inside the tree, committed and signed, installed with
# `sealtree admin install --disk` onto an image file, and booted by OVMF
# (UEFI, a writable copy of its variables) and systemd-boot from the ESP,
# never with qemu -kernel. Scenarios real-1 .. real-6.

R="$work/real"
mkdir -p "$R"
source tests/vm/debian.sh
T="$R/tree"
say "Debian test system"
debian_tree "$T" "$work/k.pub"

say "commits: debian/stable 1 and 2, debian/broken 3 (a unit boot-complete.target requires fails)"
export SEALTREE_REPO="$R/build-repo"
"$ST" init >/dev/null
dcommit() { # BRANCH VERSION: prints the commit id
    echo "$2" > "$T/usr/lib/sealtree-test-version"
    local start=$SECONDS
    "$ST" commit -b "$1" --tree "$T" -m "debian $2" --sign-key "$work/k.sec"
    say "commit $1 $2: $((SECONDS - start)) s" >&2
}
C1=$(dcommit debian/stable 1)
"$ST" publish --sign-key "$work/k.sec" >/dev/null

say "admin install --disk (an image file; nothing mounted)"
start=$SECONDS
"$ST" admin install --disk "$R/disk.img" --size 4G --source "$R/build-repo" \
    --branch debian/stable --trusted "$work/k.pub" --karg console=ttyS0 | tee "$R/install.log"
D1=$(awk '/^install: deployed /{print $3}' "$R/install.log")
say "install: $((SECONDS - start)) s, deployment $D1"

C2=$(dcommit debian/stable 2)
broken_release "$T"
C3=$(dcommit debian/broken 3)
"$ST" publish --sign-key "$work/k.sec" >/dev/null
usb_disk "$R/build-repo" "$R/usb.img"
unset SEALTREE_REPO
rm -rf "$T"
DISK="$R/disk.img"

# boot_results NAME: the RESULT lines of boot NAME.
boot_results() { results "$R/$1.agent"; }

# boot_until_back NAME PLAN [DISK...]: restart the machine (NAME-1,
# NAME-2, ...) until it boots $D1 again, at most 5 times. TRIES: boots
# before that; REFUSALS: those refused by prepare-root; LAST: the last
# boot's name.
boot_until_back() {
    local name=$1 plan=$2 i
    shift 2
    TRIES=0 REFUSALS=0
    for i in 1 2 3 4 5; do
        LAST="$name-$i"
        qboot "$LAST" "$plan" "$DISK" "$@"
        [ "$BOOTED" = "$D1" ] && return
        TRIES=$((TRIES + 1))
        grep -aq "sealtree-prepare-root: FAILED: image digest" "$R/$LAST.log" && REFUSALS=$((REFUSALS + 1))
    done
}

# Plans are bash sourced by the agent (tests/vm/real-agent.sh), which sets
# $booted and $state and has check, boot_count_path, wait_blessed,
# default_id, commit_of and verify_all.
cat > "$R/plan-first" <<PLAN
system_ok() {
    [ "\$state" = running ] || { [ "\$state" = degraded ] && ! systemctl --failed --plain --no-legend | grep -q sealtree; }
}
check "real-1: the installed deployment boots ($D1)" [ "\$booted" = "$D1" ]
check "real-1: multi-user.target reached" systemctl is-active -q multi-user.target
check "real-1: systemctl is-system-running: \$state; failed units: \$(systemctl --failed --plain --no-legend | awk '{print \$1}' | tr '\n' ' ')" system_ok
check "real-1: / is the composefs overlay with verity=require" grep -q '^composefs / overlay ro.*verity=require' /proc/mounts
check "real-1: fs-verity turned on at first boot (images and objects)" sh -c '[ ! -e /sysroot/sealtree/verity-pending ] && lsattr /sysroot/sealtree/deploy/$D1/image.cfs | grep -q "^[^ ]*V"'
check "real-1: the ESP is mounted at /sysroot/boot" mountpoint -q /sysroot/boot
bcp=\$(boot_count_path)
check "real-2: the loader counted this boot: LoaderBootCountPath \$bcp" grep -q 'sealtree-1-$D1+2-1.conf' <<< "\$bcp"
check "real-2: sealtree-bless-boot.service drops the counter after boot-complete.target" wait_blessed 300
systemd-analyze 2>/dev/null | sed 's/^/AGENT: /'
systemctl poweroff
PLAN
say "real-1, real-2: first boot of the installed disk"
before=$(esp_entries "$DISK" | tr '\n' ' ')
qboot first "$R/plan-first" "$DISK"
boot_results first
after=$(esp_entries "$DISK" | tr '\n' ' ')
name="real-2: on the ESP: sealtree-1-$D1+3.conf before the boot, no counter after it"
if [ "$before" = "sealtree-1-$D1+3.conf " ] && [ "$after" = "sealtree-1-$D1.conf " ]; then
    result "$name" pass
else
    result "$name" fail "before: $before; after: $after"
fi

cat > "$R/plan-upgrade" <<PLAN
mount -o ro /dev/vdc /mnt
check "real-4: remote add usb file:///mnt/repo (second disk)" sealtree remote add usb file:///mnt/repo --trusted /sysroot/sealtree/trusted.d
start=\$SECONDS
check "real-4: admin upgrade --remote usb stages the update" sealtree admin upgrade --remote usb
echo "AGENT: upgrade took \$((SECONDS - start)) s"
sealtree admin status | sed 's/^/AGENT: /'
umount /mnt
# After staging, before the reboot: finalize merges /etc again.
echo "edited after staging" > /etc/sealtree-test-local.conf
mkdir -p /var/lib/sealtree-test && echo "var survives" > /var/lib/sealtree-test/marker
systemctl reboot
PLAN
say "real-4: upgrade from a file:// remote, then systemctl reboot"
qboot upgrade "$R/plan-upgrade" "$DISK" "$R/usb.img"
boot_results upgrade

cat > "$R/plan-upgraded" <<PLAN
check "real-4: the staged deployment (commit $C2) boots after systemctl reboot" [ "\$(commit_of \$booted)" = "$C2" ]
check "real-4: its content is version 2" grep -qx 2 /usr/lib/sealtree-test-version
check "real-4: an /etc edit made after staging, before the reboot, survived" grep -q "edited after staging" /etc/sealtree-test-local.conf
check "real-4: the file in /var survived" grep -q "var survives" /var/lib/sealtree-test/marker
wait_blessed 300
check "real-5: admin rollback" sealtree admin rollback
systemctl reboot
PLAN
qboot upgraded "$R/plan-upgraded" "$DISK"
boot_results upgraded

cat > "$R/plan-rolledback" <<PLAN
check "real-5: after rollback and reboot the previous deployment ($D1) boots" [ "\$booted" = "$D1" ]
check "real-5: its content is version 1" grep -qx 1 /usr/lib/sealtree-test-version
mount -o ro /dev/vdc /mnt
sealtree pull usb debian/broken | sed 's/^/AGENT: /'
check "real-3: deploy a release whose boot-complete.target fails" sealtree admin deploy usb/debian/broken
umount /mnt
systemctl poweroff
PLAN
qboot rolledback "$R/plan-rolledback" "$DISK" "$R/usb.img"
boot_results rolledback

# real-3: restart the machine until the loader gives up; the test does
# nothing else.
cat > "$R/plan-fallback" <<PLAN
if [ "\$booted" != "$D1" ]; then
    echo "AGENT: boot-complete.target: \$(systemctl is-active boot-complete.target)"
    echo "AGENT-KILL"
    sleep 600
fi
check "real-3: admin status says the broken deployment failed its tries" sh -c "sealtree admin status | grep -q 'failed its boot tries; the loader now boots $D1'"
mount -o ro /dev/vdc /mnt
sealtree admin deploy usb/debian/stable > /run/deployed
umount /mnt
D4=\$(awk '/^deployed /{print \$2}' /run/deployed)
echo "AGENT: damaged deployment \$D4"
# Someone with the disk replaces its image.
cp /sysroot/sealtree/deploy/$D1/image.cfs /sysroot/sealtree/deploy/\$D4/image.new
mv -f /sysroot/sealtree/deploy/\$D4/image.new /sysroot/sealtree/deploy/\$D4/image.cfs
sync
systemctl poweroff
PLAN
say "real-3: a deployment whose boot fails, restarted until the loader gives up"
boot_until_back fallback "$R/plan-fallback" "$R/usb.img"
echo "ESP entries: $(esp_entries "$DISK" | tr '\n' ' ')"
name="real-3: boot-complete.target fails: tried 3 times, then the previous deployment ($D1) booted by itself"
if [ "$BOOTED" = "$D1" ] && [ "$TRIES" = 3 ]; then
    result "$name" pass
else
    result "$name" fail "tries: $TRIES, then booted: ${BOOTED:-nothing}"
fi
boot_results "$LAST"
D4=$(tr -d '\r' < "$R/$LAST.agent" | sed -n 's/^AGENT: damaged deployment //p')

# The last refused boot falls back to D1, which then runs real-6's kill
# sweep over every step of the boot entry changes.
cat > "$R/plan-refused" <<PLAN
check "real-3: admin status says the refused deployment failed its tries" sh -c "sealtree admin status | grep -q 'deployment $D4 failed its boot tries'"
$(cat tests/vm/real-sweep.sh)
sweep_all "$C1" "$C2"
systemctl poweroff
PLAN
say "real-3: a deployment whose image was replaced ($D4), restarted until the loader gives up"
# The last of these boots runs the kill sweep: allow it the time.
TIMEOUT=$((TIMEOUT * 3)) boot_until_back refused "$R/plan-refused"
name="real-3: prepare-root refuses the replaced image: tried 3 times, then $D1 booted by itself"
if [ "$BOOTED" = "$D1" ] && [ "$REFUSALS" = 3 ] && [ "$TRIES" = 3 ]; then
    result "$name" pass
else
    result "$name" fail "refusals: $REFUSALS of $TRIES, then booted: ${BOOTED:-nothing}"
fi
say "real-6: kill -9 at every step (in the VM, on the real ESP)"
boot_results "$LAST"

# real-6, power cuts: each boot checks what the previous cut left, then
# starts a deploy (odd cycles) or a staged deploy and systemctl reboot,
# whose finalize runs at shutdown (even cycles); the harness cuts the
# power a random moment into it.
say "real-6: power cuts during deploy and finalize"
cuts=0
expect_old="" expect_commit=""
# cut_plan N LAST: the plan of cycle N (LAST=yes: only check, power off).
cut_plan() {
    cat <<PLAN
if [ -n "$expect_old" ]; then
    check "real-6: after power cut $cuts the machine boots the old ($expect_old) or the new deployment (commit ${expect_commit:0:12}): \$booted" \
        sh -c '[ "\$0" = "$expect_old" ] || [ "\$1" = "$expect_commit" ]' "\$booted" "\$(commit_of \$booted)"
    check "real-6: after power cut $cuts every entry's kernel, initramfs and deployment exist and verify" verify_all
fi
if [ "$2" = yes ]; then systemctl poweroff; sleep 600; fi
sealtree admin cleanup > /dev/null
old=\$(default_id)
if [ "\$(commit_of \$old)" = "$C1" ]; then next=$C2; else next=$C1; fi
if [ \$(( $1 % 2 )) = 1 ]; then
    echo "AGENT: cut: old \$old commit \$next op deploy"
    echo "AGENT-CUT"
    sealtree admin deploy \$next > /dev/null
    echo "AGENT: finished before the cut"
else
    sealtree admin deploy --stage \$next > /dev/null
    echo "AGENT: cut: old \$old commit \$next op finalize"
    echo "AGENT-CUT"
    systemctl reboot
fi
sleep 600
PLAN
}
for n in $(seq 1 16); do
    cut_plan "$n" no > "$R/plan-cut"
    # A moment within the operation (deploy, or the shutdown that
    # finalizes), which take a few seconds under TCG.
    CUT_AFTER=$(awk -v s="$RANDOM" -v max="${CUT_WINDOW:-5}" 'BEGIN { srand(s); printf "%.1f", rand() * max }')
    qboot "cut-$n" "$R/plan-cut" "$DISK"
    boot_results "cut-$n"
    line=$(tr -d '\r' < "$R/cut-$n.agent" | sed -n 's/^AGENT: cut: //p' | tail -1)
    expect_old=$(echo "$line" | awk '{print $2}')
    expect_commit=$(echo "$line" | awk '{print $4}')
    case "$ENDED" in
    "power cut "*" into the operation")
        grep -aq "finished before the cut" "$R/cut-$n.agent" || cuts=$((cuts + 1)) ;;
    esac
    [ "$cuts" -ge 10 ] && break
done
cut_plan 0 yes > "$R/plan-cut"
qboot "cut-last" "$R/plan-cut" "$DISK"
boot_results "cut-last"
name="real-6: at least 10 power cuts in the middle of deploy and finalize"
if [ "$cuts" -ge 10 ]; then result "$name ($cuts)" pass; else result "$name" fail "only $cuts"; fi
echo "ESP entries: $(esp_entries "$DISK" | tr '\n' ' ')"

say "Debian boot timings (first boot)"
tr -d '\r' < "$R/first.log" | sed 's/^\[ *[0-9.]*\] //' |
    grep -a -E '^sealtree-prepare-root: .* ok|fs-verity enabled' | awk '!seen[$0]++' || true
tr -d '\r' < "$R/first.agent" | grep -a -E 'Startup finished|multi-user.target' || true
