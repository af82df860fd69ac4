#!/bin/sh
# scripts/check-layers.sh — make check's layering check (scripts/check-layers.py):
# first on a copy of the product with five planted violations, each of which it
# must report, then on the tree itself.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/carehub-layers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -R "$here/include" "$here/common" "$here/broker" "$here/agents" "$tmp/"
printf '#include "proto.h"\n' >>"$tmp/broker/store.c"      # storage includes the protocol
printf '#include "case.h"\n' >>"$tmp/broker/store_index.c" # storage includes a record kind
printf '#include "store.h"\n' >>"$tmp/agents/lib/spool.c"  # libcarehub includes the broker's store
printf '#include "cli.h"\n' >>"$tmp/broker/log.c"          # the broker includes the agents' runtime
printf '#include "store.h"\n' >>"$tmp/common/util.c"       # the shared layer includes the broker
if "$py" "$here/scripts/check-layers.py" "$tmp" 2>"$tmp/out"; then
    echo "check-layers: FAIL: the planted violations were not reported" >&2
    exit 1
fi
for want in 'broker/store.c:[0-9]*: #include "proto.h": layer 1 (store) includes layer 5 (proto)' \
            'broker/store_index.c:[0-9]*: #include "case.h": layer 1 (store) includes layer 3 (case)' \
            'agents/lib/spool.c:[0-9]*: #include "store.h": libcarehub may include' \
            'broker/log.c:[0-9]*: #include "cli.h": the broker never includes' \
            'common/util.c:[0-9]*: #include "store.h": common/ is below both sides'; do
    grep -q "$want" "$tmp/out" || {
        echo "check-layers: FAIL: the planted violation was not reported: $want" >&2
        cat "$tmp/out" >&2
        exit 1
    }
done
echo "check-layers: the 5 planted violations are reported"
exec "$py" "$here/scripts/check-layers.py" "$here"
