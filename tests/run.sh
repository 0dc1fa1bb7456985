#!/usr/bin/env bash
# The test suite, honest about what did not run: cargo test showing each
# test's output, then one line 'N passed, N failed, N skipped' and the
# capabilities the skipped tests lacked (root, nginx, fsverity, …; run as
# root on a machine with them, or see .ci/run for the packages). Under
# CI (CI=true) a missing capability fails its test, and any skip fails
# the run.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --no-fail-fast -- --show-output 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
skipped=$(grep -ac '^NOT RUN: ' "$log")
echo
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
if [ "$skipped" -gt 0 ]; then
    echo "not run, for want of:"
    grep -a '^NOT RUN: ' "$log" | sed 's/^NOT RUN: //' | sort | uniq -c | sed 's/^ */  /'
fi
[ "$status" = 0 ] && { [ "$skipped" = 0 ] || [ "${CI:-}" != true ]; }
