#!/bin/sh
# Run every unit test binary in DIR; fail if any fails. Prints a summary line.
set -u
dir=$1
pass=0; fail=0
for t in "$dir"/test_*; do
    [ -x "$t" ] || continue
    if "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAILED: $t" >&2; fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" = 0 ] && [ "$pass" -gt 0 ]
