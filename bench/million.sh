#!/usr/bin/env bash
# Resource use at scale: an image built from a dumpfile of ENTRIES
# (default 1,000,000) entries, 1000 per directory, a third of the files
# with inline content, the rest external objects; reports time and peak
# memory, and the image size.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
cargo build --release --quiet
st="$PWD/target/release/sealtree"
work=$(mktemp -d /var/tmp/sealtree-million.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$ENTRIES" > "$work/big.dump" <<'PY'
import hashlib, sys
n = int(sys.argv[1])
per = 1000
dirs = max(1, n // per)
print("/ 4096 40755 %d 0 0 0 1700000000.0 - - -" % (dirs + 2))
made = 1
for d in range(dirs):
    print("/d%04d 4096 40755 2 0 0 0 1700000000.0 - - -" % d)
    made += 1
    for f in range(per - 1):
        if made >= n:
            break
        made += 1
        if f % 3 == 0:
            print("/d%04d/f%04d 11 100644 1 0 0 0 1700000000.0 - hello\\x20world -" % (d, f))
        else:
            h = hashlib.sha256(b"%d/%d" % (d, f)).hexdigest()
            print("/d%04d/f%04d 4096 100644 1 0 0 0 1700000000.0 %s/%s - %s" % (d, f, h[:2], h[2:], h))
PY
echo "dumpfile: $(wc -l < "$work/big.dump") entries, $(du -h "$work/big.dump" | cut -f1)"
/usr/bin/time -f '%e s, peak %M KB' "$st" mkcomposefs --from-file "$work/big.dump" "$work/big.cfs" 2>&1 | tail -1
echo "image: $(du -h "$work/big.cfs" | cut -f1)"
