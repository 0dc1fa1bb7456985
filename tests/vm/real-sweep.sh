# Part of a plan for the agent (tests/vm/real-agent.sh): real-6's kill
# sweep, run in the booted Debian system against the real ESP (vfat) and
# root. A kill -9 loses nothing the kernel already has, so what a reader
# can see changes only at a rename, an unlink or a directory removal:
# those are the steps. One traced run lists them; then, for each, strace
# sends SIGKILL at exactly that call. After every kill the boot entries
# must verify (verify_all) and the default be one the operation allows.
STEPS=rename,renameat,renameat2,unlink,unlinkat,rmdir

# sweep NAME SETUP ALLOWED SAMPLE -- CMD...: ALLOWED is evaluated with
# $old (the default before) and $now (after the kill); SAMPLE, if not
# empty, limits the unlinkat steps to those ordinals: removing a
# directory tree (a deployment's /etc holds hundreds of files) is one
# unlinkat per file, and every state after the first is alike, a tree
# no entry names any more, partly gone.
sweep() {
    local name=$1 setup=$2 allowed=$3 sample=$4
    shift 5
    local call ord rc kills=0 bad=0 old now steps
    eval "$setup" > /dev/null
    strace -f -qq -o /run/steps -e trace="$STEPS" "$@" > /dev/null 2>&1
    # Each step as "CALL ORDINAL", the ordinal counted per call.
    steps=$(sed 's/^\[pid *[0-9]*\] //; s/^[0-9][0-9]* *//; s/(.*//' /run/steps | awk '{ print $1, ++n[$1] }')
    while read -r call ord; do
        [ -n "$call" ] || continue
        if [ "$call" = unlinkat ] && [ -n "$sample" ]; then
            case " $sample " in *" $ord "*) ;; *) continue ;; esac
        fi
        eval "$setup" > /dev/null
        old=$(default_id)
        strace -f -qq -o /dev/null -e trace="$call" -e inject="$call":signal=KILL:when="$ord" \
            "$@" > /dev/null 2>&1
        rc=$?
        now=$(default_id)
        if ! verify_all; then
            bad=$((bad + 1))
            echo "AGENT: $name: inconsistent after a kill at $call #$ord"
        fi
        if ! eval "$allowed"; then
            bad=$((bad + 1))
            echo "AGENT: $name: after a kill at $call #$ord the default is $now (before: $old)"
        fi
        # 137: killed by SIGKILL; otherwise this run took another path.
        [ "$rc" = 137 ] && kills=$((kills + 1))
    done <<< "$steps"
    echo "AGENT: $name: $(echo "$steps" | wc -l) steps, $kills kills, $bad problems"
    check "real-6: kill -9 at each of the $kills steps of $name: entries verify, default as allowed" \
        test "$bad" = 0 -a "$kills" -gt 0
}

# sweep_all C1 C2: deploy, rollback, finalize-staged, cleanup, undeploy
# and bless.
sweep_all() {
    local c1=$1 c2=$2
    local start=$SECONDS
    # At most a few deployments (the ESP holds a kernel and initramfs each).
    local trim='[ $(ls /sysroot/sealtree/deploy | wc -l) -le 4 ] || sealtree admin cleanup'
    sealtree admin cleanup > /dev/null
    sweep "deploy" "$trim" \
        '[ "$now" = "$old" ] || [ "$(commit_of "$now")" = "'"$c2"'" ]' "1" -- \
        sealtree admin deploy "$c2"
    sweep "rollback" \
        'rolled=$(sealtree admin status | awk "/^[^ ]+ .*rollback/ { print \$1; exit }")' \
        '[ "$now" = "$old" ] || [ "$now" = "$rolled" ]' "" -- \
        sealtree admin rollback
    sweep "finalize-staged" \
        "$trim"'; sealtree admin deploy --stage '"$c1"'; staged=$(sealtree admin status | awk "/ staged/ { print \$1; exit }")' \
        '[ "$now" = "$old" ] || [ "$now" = "$staged" ]' "1" -- \
        sealtree admin finalize-staged
    sweep "cleanup" \
        'sealtree admin deploy '"$c2"'; sealtree admin deploy '"$c1"'' \
        '[ "$now" = "$old" ]' "1" -- \
        sealtree admin cleanup
    sweep "undeploy" \
        "$trim"'; sealtree admin deploy '"$c2"'; default_id > /run/victim; second=$(sealtree admin status | awk "/^[^ ]+ .*rollback/ { print \$1; exit }")' \
        '[ "$now" = "$old" ] || [ "$now" = "$second" ]' "1" -- \
        sh -c 'sealtree admin undeploy "$(cat /run/victim)"'
    # The state systemd-boot leaves when it starts an entry: counted.
    sweep "bless" \
        'f=$(ls /sysroot/boot/loader/entries/ | grep -E "^sealtree-[0-9]+-$booted\.conf$"); [ -z "$f" ] || mv "/sysroot/boot/loader/entries/$f" "/sysroot/boot/loader/entries/${f%.conf}+2-1.conf"' \
        '[ "$now" = "$old" ]' "" -- \
        sealtree admin bless
    sealtree admin cleanup > /dev/null
    echo "AGENT: kill sweep: $((SECONDS - start)) s"
}
