# Part of a plan for the agent (tests/vm/real-agent.sh): real-6's kill
# sweep, run in the booted Debian system against the real ESP (vfat) and
# root. Each step that changes or makes durable what a reader sees (a
# rename, an unlink, a directory removal, an fsync, a syncfs) is a place
# to die: strace sends SIGKILL at the Nth call of one of them, for every
# call and N, until the command runs through. After every kill the boot
# entries must verify (verify_all) and the default be one the operation
# allows.

# sweep NAME SETUP ALLOWED [UNLINKAT-SAMPLES] -- CMD...: ALLOWED is
# evaluated with $old (the default before) and $now (after the kill).
sweep() {
    local name=$1 setup=$2 allowed=$3 samples=$4
    shift 5
    local call n rc kills=0 bad=0 old now
    for call in rename renameat renameat2 unlink unlinkat rmdir fsync fdatasync syncfs; do
        for n in $(seq 1 300); do
            if [ "$call" = unlinkat ] && [ -n "$samples" ]; then
                # Thousands of file removals in a deployment's /etc: a sample.
                case " $samples " in *" $n "*) ;; *) [ "$n" -gt "${samples##* }" ] && break; continue ;; esac
            fi
            eval "$setup" > /dev/null
            old=$(default_id)
            strace -f -qq --seccomp-bpf -o /dev/null -e trace="$call" -e inject="$call":signal=KILL:when="$n" \
                "$@" > /dev/null 2>&1
            rc=$?
            now=$(default_id)
            if ! verify_all; then
                bad=$((bad + 1))
                echo "AGENT: $name: inconsistent after a kill at $call #$n"
            fi
            if ! eval "$allowed"; then
                bad=$((bad + 1))
                echo "AGENT: $name: after a kill at $call #$n the default is $now (before: $old)"
            fi
            # 137: killed (SIGKILL); anything else: ran through.
            [ "$rc" = 137 ] || break
            kills=$((kills + 1))
        done
        if [ "$rc" != 0 ] && [ "$rc" != 137 ]; then
            bad=$((bad + 1))
            echo "AGENT: $name: failed (exit $rc) once not killed"
        fi
    done
    echo "AGENT: $name: $kills kills, $bad problems"
    check "real-6: kill -9 at each of the $kills steps of $name: entries verify, default as allowed" \
        test "$bad" = 0 -a "$kills" -gt 0
}

# sweep_all C1 C2: deploy, rollback, finalize-staged, cleanup, undeploy
# and bless.
sweep_all() {
    local c1=$1 c2=$2
    local start=$SECONDS
    sealtree admin cleanup > /dev/null
    sweep "deploy" \
        'sealtree admin cleanup' \
        '[ "$now" = "$old" ] || [ "$(commit_of "$now")" = "'"$c2"'" ]' "" -- \
        sealtree admin deploy "$c2"
    sweep "rollback" \
        'rolled=$(sealtree admin status | awk "/^[^ ]+ .*rollback/ { print \$1; exit }")' \
        '[ "$now" = "$old" ] || [ "$now" = "$rolled" ]' "" -- \
        sealtree admin rollback
    sweep "finalize-staged" \
        'sealtree admin cleanup; sealtree admin deploy --stage '"$c1"'; staged=$(sealtree admin status | awk "/ staged/ { print \$1; exit }")' \
        '[ "$now" = "$old" ] || [ "$now" = "$staged" ]' "" -- \
        sealtree admin finalize-staged
    sweep "cleanup" \
        'sealtree admin deploy '"$c2"'; sealtree admin deploy '"$c1"'' \
        '[ "$now" = "$old" ]' "1 2 5 20 100" -- \
        sealtree admin cleanup
    sweep "undeploy" \
        'sealtree admin cleanup; sealtree admin deploy '"$c2"'; default_id > /run/victim; second=$(sealtree admin status | awk "/^[^ ]+ .*rollback/ { print \$1; exit }")' \
        '[ "$now" = "$old" ] || [ "$now" = "$second" ]' "" -- \
        sh -c 'sealtree admin undeploy "$(cat /run/victim)"'
    # The state systemd-boot leaves when it starts an entry: counted.
    sweep "bless" \
        'f=$(ls /sysroot/boot/loader/entries/ | grep "^sealtree-$booted-[0-9]*\.conf$"); [ -z "$f" ] || mv "/sysroot/boot/loader/entries/$f" "/sysroot/boot/loader/entries/${f%.conf}+2-1.conf"' \
        '[ "$now" = "$old" ]' "" -- \
        sealtree admin bless
    sealtree admin cleanup > /dev/null
    echo "AGENT: kill sweep: $((SECONDS - start)) s"
}
