# Sourced by run.sh: anti-rollback with the epoch floor in a TPM. The
# Debian test system (initramfs policy epoch = require-tpm) installed with
# `sealtree admin install --disk`, booted by OVMF and systemd-boot with
# swtpm as the machine's TPM 2.0 (its state kept across boots, as a chip
# keeps it). Scenarios epoch-1 .. epoch-6.
#
# Releases, each on its own branch so the machine can pull any of them:
# C1 epoch 1; C2 epoch 2; C2b a later release of epoch 2; C3 epoch 3
# whose boot-complete.target fails. To keep the run short, C3's
# entry is given one try instead of three (real-3 shows the full count).

R="$work/epoch"
mkdir -p "$R"
source tests/vm/debian.sh
# Plain UEFI, as real.sh: sealed.sh, sourced before, turns Secure Boot on.
unset SECURE_BOOT
T="$R/tree"
export TPM_STATE="$R/tpm"
say "epoch: Debian test system, initramfs policy epoch = require-tpm"
POLICY='signature = required\nverity = require\nepoch = require-tpm\n' debian_tree "$T" "$work/k.pub"
export SEALTREE_REPO="$R/build-repo"
"$ST" init >/dev/null
ecommit() { # BRANCH VERSION EPOCH: prints the commit id
    echo "$2" > "$T/usr/lib/sealtree-test-version"
    "$ST" commit -b "$1" --tree "$T" -m "epoch test $2" --sign-key "$work/k.sec" --epoch "$3"
}
C1=$(ecommit debian/stable 1 1)
"$ST" publish --sign-key "$work/k.sec" >/dev/null
"$ST" admin install --disk "$R/disk.img" --size 4G --source "$R/build-repo" \
    --branch debian/stable --trusted "$work/k.pub" --karg console=ttyS0 | tee "$R/install.log"
D1=$(awk '/^install: deployed /{print $3}' "$R/install.log")
DISK="$R/disk.img"
C2=$(ecommit debian/e2 2 2)
C2B=$(ecommit debian/e2b 3 2)
broken_release "$T"
C3=$(ecommit debian/e3 4 3)
"$ST" publish --sign-key "$work/k.sec" >/dev/null
for c in "$C1" "$C2" "$C2B" "$C3"; do
    echo "== $c: $(tr -d '\n' < "$R/build-repo/signatures/$c.json" | grep -o '"epoch":[0-9]*')"
done
usb_disk "$R/build-repo" "$R/usb.img"
unset SEALTREE_REPO
rm -rf "$T"

# Plans run in the agent (tests/vm/real-agent.sh); floor: the TPM's, as
# `admin epoch` prints it (its first line).
PRELUDE='floor() { sealtree admin epoch 2>&1 | head -1; }
sealtree admin epoch 2>&1 | sed "s/^/AGENT: admin epoch: /"'
# deploy_from_usb BRANCH: pull it from the USB disk and deploy it.
DEPLOY='deploy_from_usb() {
    mount -o ro /dev/vdc /mnt
    sealtree remote add usb file:///mnt/repo --trusted /sysroot/sealtree/trusted.d 2>/dev/null
    sealtree pull usb "$1" | sed "s/^/AGENT: /"
    sealtree admin deploy "usb/$1" > /run/deployed 2> /run/deploy.err || sed "s/^/AGENT: /" /run/deploy.err
    umount /mnt
    echo "AGENT: deployed $(awk "/^deployed /{print \$2}" /run/deployed)"
}'

cat > "$R/plan" <<PLAN
$PRELUDE
check "epoch-1: the epoch-1 deployment boots ($D1), its entry not yet blessed; floor \$(floor)" [ "\$booted" = "$D1" ]
check "epoch-1: blessed after boot-complete.target" wait_blessed 300
systemctl reboot
PLAN
say "epoch-1: first boot of $D1 (epoch 1), then a boot after its blessing"
qboot first "$R/plan" "$DISK"
results "$R/first.agent"

cat > "$R/plan" <<PLAN
$PRELUDE
$DEPLOY
check "epoch-1: on its next boot (blessed) the floor reads \$(floor)" [ "\$(floor)" = 1 ]
deploy_from_usb debian/e2
systemctl reboot
PLAN
qboot blessed "$R/plan" "$DISK" "$R/usb.img"
results "$R/blessed.agent"
D2=$(tr -d '\r' < "$R/blessed.agent" | sed -n 's/^AGENT: deployed //p')

# The machine's owner sets owner and lockout authorizations (kept off the
# machine), as README advises: then root can neither delete the floor
# nor clear the TPM. Done here on the powered-off machine's TPM.
say "epoch: the owner sets the TPM's owner and lockout authorizations"
swtpm socket --tpm2 --tpmstate "dir=$TPM_STATE" --server type=tcp,port=2391,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=2392,bindaddr=127.0.0.1 --flags not-need-init,startup-clear \
    --pid "file=$TPM_STATE/owner.pid" --daemon
for h in o l; do TPM2TOOLS_TCTI=swtpm:port=2391 tpm2_changeauth -c $h "owner-secret-$RANDOM"; done
TPM2TOOLS_TCTI=swtpm:port=2391 tpm2_shutdown -c 2>/dev/null || true
kill "$(cat "$TPM_STATE/owner.pid")"
sleep 1

say "epoch-2: $D2 (epoch 2): first boot, then a boot after its blessing"
cat > "$R/plan" <<PLAN
$PRELUDE
check "epoch-2: the epoch-2 deployment boots ($D2); not blessed yet, the floor stays \$(floor)" sh -c '[ "\$0" = "$D2" ] && [ "\$1" = 1 ]' "\$booted" "\$(floor)"
check "epoch-2: blessed after boot-complete.target" wait_blessed 300
systemctl reboot
PLAN
qboot d2-first "$R/plan" "$DISK"
results "$R/d2-first.agent"

cat > "$R/plan" <<PLAN
$PRELUDE
check "epoch-2: on its next boot the floor becomes \$(floor)" sh -c '[ "\$0" = "$D2" ] && [ "\$1" = 2 ]' "\$booted" "\$(floor)"
sealtree admin status | sed 's/^/AGENT: /'
check "epoch-3: admin status marks $D1 below the floor" sh -c "sealtree admin status | grep -q 'epoch   1: BELOW THE FLOOR 2'"
# epoch-5: root in the booted system against the index.
I=0x1534c54
export TPM2TOOLS_TCTI=device:/dev/tpmrm0
printf '\0\0\0\0\0\0\0\0' > /run/zero8
tpm_try() { # WHAT COMMAND...: must fail; the TPM's (or the tool's) words
    local what=\$1 out rc why code
    shift
    out=\$("\$@" 2>&1 < /run/zero8)
    rc=\$?
    # The TPM's response code, decoded.
    code=\$(echo "\$out" | grep -m1 -o 'ErrorCode (0x[0-9a-f]*)' | grep -o '0x[0-9a-f]*')
    why=\$([ -n "\$code" ] && echo "\$code \$(tpm2_rc_decode \$code)")
    [ -n "\$why" ] || why=\$(echo "\$out" | grep -m1 '^ERROR' | sed 's/^ERROR: //')
    if [ \$rc -ne 0 ]; then echo "RESULT pass epoch-5: as root, \$what fails: \$why"
    else echo "RESULT fail epoch-5: as root, \$what succeeded"; fi
}
tpm_try "writing zeros (tpm2_nvwrite)" tpm2_nvwrite \$I -C \$I -i -
tpm_try "incrementing it (tpm2_nvincrement)" tpm2_nvincrement \$I -C \$I
tpm_try "undefining it (tpm2_nvundefine -C o)" tpm2_nvundefine \$I -C o
tpm_try "clearing the TPM (tpm2_clear -c l)" tpm2_clear -c l
# The attacker's move: the epoch-1 deployment's entry made the newest,
# with one try.
cp /sysroot/boot/loader/entries/sealtree-1-$D1.conf /sysroot/boot/loader/entries/sealtree-99-$D1+1.conf
sync
systemctl poweroff
PLAN
qboot d2-blessed "$R/plan" "$DISK"
results "$R/d2-blessed.agent"

say "epoch-3: the loader starts $D1 (epoch 1, valid signature) as the newest entry"
cat > "$R/plan" <<PLAN
echo "AGENT-KILL"
sleep 600
PLAN
qboot refused "$R/plan" "$DISK"
refusal=$(log_line 'sealtree-prepare-root: FAILED' "$R/refused.log")
expect="epoch: deployment $D1 (commit $C1) is of epoch 1, below the floor 2 kept in the TPM"
name="epoch-3: refused at boot: ${refusal:-no refusal}"
if [ -z "$BOOTED" ] && grep -qF "$expect" <<< "$refusal"; then
    result "$name" pass
else
    result "$name" fail "booted ${BOOTED:-nothing}; expected: $expect"
fi

cat > "$R/plan" <<PLAN
$PRELUDE
$DEPLOY
check "epoch-3: with its one try used, the loader fell back to $D2 by itself" [ "\$booted" = "$D2" ]
check "epoch-5: after a reboot the floor is unchanged: \$(floor)" [ "\$(floor)" = 2 ]
deploy_from_usb debian/e2b
systemctl reboot
PLAN
qboot fallback "$R/plan" "$DISK" "$R/usb.img"
results "$R/fallback.agent"
D2B=$(tr -d '\r' < "$R/fallback.agent" | sed -n 's/^AGENT: deployed //p')

say "epoch-4: a second release of epoch 2 ($D2B), then admin rollback"
cat > "$R/plan" <<PLAN
$PRELUDE
check "epoch-4: the newer epoch-2 release boots ($D2B)" [ "\$booted" = "$D2B" ]
wait_blessed 300
check "epoch-4: admin rollback to $D2 (epoch 2, floor 2)" sealtree admin rollback
systemctl reboot
PLAN
qboot d2b "$R/plan" "$DISK"
results "$R/d2b.agent"

cat > "$R/plan" <<PLAN
$PRELUDE
$DEPLOY
check "epoch-4: after admin rollback the older epoch-2 release boots ($D2)" [ "\$booted" = "$D2" ]
check "epoch-4: its content is version 2" grep -qx 2 /usr/lib/sealtree-test-version
wait_blessed 300
deploy_from_usb debian/e3
D3=\$(awk '/^deployed /{print \$2}' /run/deployed)
# One try instead of three, to keep the run short.
for f in /sysroot/boot/loader/entries/sealtree-*-\$D3+3.conf; do mv "\$f" "\${f%+3.conf}+1.conf"; done
ls /sysroot/boot/loader/entries | sed 's/^/AGENT: entry: /'
sync
systemctl poweroff
PLAN
qboot rolledback "$R/plan" "$DISK" "$R/usb.img"
results "$R/rolledback.agent"
D3=$(tr -d '\r' < "$R/rolledback.agent" | sed -n 's/^AGENT: deployed //p')

say "epoch-6: $D3 (epoch 3) fails its boot"
cat > "$R/plan" <<PLAN
$PRELUDE
if [ "\$booted" = "$D3" ]; then
    check "epoch-6: the epoch-3 deployment boots but is not blessed; the floor stays \$(floor)" [ "\$(floor)" = 2 ]
    echo "AGENT: boot-complete.target: \$(systemctl is-active boot-complete.target)"
    echo "AGENT-KILL"
    sleep 600
fi
check "epoch-6: the loader fell back to the epoch-2 deployment ($D2): \$booted" [ "\$booted" = "$D2" ]
check "epoch-6: the floor is still \$(floor)" [ "\$(floor)" = 2 ]
systemctl poweroff
PLAN
qboot d3 "$R/plan" "$DISK"
results "$R/d3.agent"
if [ "$BOOTED" = "$D3" ]; then
    qboot d3-after "$R/plan" "$DISK"
    results "$R/d3-after.agent"
else
    result "epoch-6: $D3 (epoch 3) boots once" fail "booted ${BOOTED:-nothing}"
fi
echo "ESP entries: $(esp_entries "$DISK" | tr '\n' ' ')"
unset TPM_STATE
