#!/bin/sh
# tests/fuzz/run.sh — build the libFuzzer targets with clang and run each one.
#
#   sh tests/fuzz/run.sh [target ...]      (from the source tree's top; `make fuzz` does this)
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 10), passed as -max_total_time
#   FUZZ_CC        the compiler (default clang; needs -fsanitize=fuzzer)
#   FUZZ_FLAGS     extra libFuzzer flags, e.g. "-jobs=2" or "-dict=..."
#
# Each target is built into build/fuzz/<target> from tests/fuzz/<target>.c and an
# archive of the broker modules (broker/*.c but main.c, common/*.c) and the agent readers
# (agents/lib/csv.c, jsonl.c), all compiled with -fsanitize=fuzzer-no-link,address,
# undefined; the linker takes from the archive only the modules a target needs.
# The committed seeds tests/fuzz/corpus/<target>/ are copied to
# build/fuzz/corpus-<target>/, which the run grows, so the committed corpus stays small.
# Crash, leak and timeout inputs are written to build/fuzz/<target>-artifacts/.
# One summary line per target; the exit status is 1 when any target crashed or
# failed to build.
set -u

cd "$(dirname "$0")/../.." || exit 2
TOP=$(pwd)
SECONDS_PER=${FUZZ_SECONDS:-10}
CC=${FUZZ_CC:-clang}
OUT=build/fuzz
PKGS="libzmq lmdb msgpack libcurl yaml-0.1 jansson libsodium libmicrohttpd libsystemd"
ALL_TARGETS="fuzz_frame fuzz_schema fuzz_config fuzz_csv fuzz_jsonl fuzz_proto fuzz_hook fuzz_sms_inbound fuzz_web"
TARGETS=${*:-$ALL_TARGETS}

if ! PKG_CFLAGS=$(pkg-config --cflags $PKGS) || ! PKG_LIBS=$(pkg-config --libs $PKGS); then
    echo "fuzz: pkg-config cannot find: $PKGS (make deps-test)" >&2
    exit 2
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Ibroker -Icommon -Iinclude -Iagents/lib \
-g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror $PKG_CFLAGS \
-DCAREHUB_SCHEMAS_DIR=\"$TOP/schemas\" -DCAREHUB_SOURCE_DIR=\"$TOP\""

mkdir -p "$OUT/obj/broker" "$OUT/obj/common" "$OUT/obj/agents/lib" || exit 2

# ---- the library archive (rebuilt only for changed sources) ---------------------------
LIB_SRC=$(ls broker/*.c common/*.c | grep -v '^broker/main\.c$'; echo agents/lib/csv.c agents/lib/jsonl.c)
objs=""
for src in $LIB_SRC; do
    obj="$OUT/obj/${src%.c}.o"
    objs="$objs $obj"
    newer=$(find broker common include agents/lib -name '*.h' -newer "$obj" 2>/dev/null | head -n 1)
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$newer" ] || [ "$0" -nt "$obj" ]; then
        echo "  CC [fuzz]  $src"
        # shellcheck disable=SC2086
        if ! $CC $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj"; then
            echo "fuzz: cannot compile $src" >&2
            exit 2
        fi
    fi
done
rm -f "$OUT/libfuzzlib.a"
# shellcheck disable=SC2086
ar rcs "$OUT/libfuzzlib.a" $objs || exit 2

# ---- build and run each target --------------------------------------------------------
status=0
summary=""
for t in $TARGETS; do
    if [ ! -f "tests/fuzz/$t.c" ]; then
        echo "fuzz: no such target: $t" >&2
        status=1
        continue
    fi
    echo "  LD [fuzz]  $OUT/$t"
    # shellcheck disable=SC2086
    if ! $CC $CFLAGS $SAN -fsanitize=fuzzer "tests/fuzz/$t.c" "$OUT/libfuzzlib.a" \
            -o "$OUT/$t" $PKG_LIBS -lm; then
        summary="$summary
$(printf '%-12s %12s %8s' "$t" "-" "BUILD-FAILED")"
        status=1
        continue
    fi
    corpus="$OUT/corpus-$t"
    art="$OUT/$t-artifacts"
    mkdir -p "$corpus" "$art"
    if [ -d "tests/fuzz/corpus/$t" ]; then
        cp -p "tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null
    fi
    log="$OUT/$t.log"
    # every crash found so far (tests/fuzz/crashes/<target>-*) must pass, run once each
    regress=$(ls tests/fuzz/crashes/"$t"-* 2>/dev/null)
    if [ -n "$regress" ]; then
        echo "  REPLAY     $t: $(echo "$regress" | wc -l | tr -d ' ') regression input(s)"
        # shellcheck disable=SC2086
        if ! CAREHUB_SCHEMAS="${CAREHUB_SCHEMAS:-$TOP/schemas}" "$OUT/$t" $regress \
                >"$OUT/$t-regress.log" 2>&1; then
            summary="$summary
$(printf '%-12s %12s %8s' "$t" "-" "REGRESSED")"
            status=1
            echo "fuzz: $t fails a regression input again; see $OUT/$t-regress.log" >&2
            continue
        fi
    fi
    echo "  FUZZ       $t for ${SECONDS_PER}s (log $log)"
    # libFuzzer writes artifacts as <prefix>crash-<sha1>; keep them per target
    # shellcheck disable=SC2086
    CAREHUB_SCHEMAS="${CAREHUB_SCHEMAS:-$TOP/schemas}" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        "$OUT/$t" -max_total_time="$SECONDS_PER" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$art/" ${FUZZ_FLAGS:-} "$corpus" \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs="?"
    crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
        -o -name 'oom-*' \) 2>/dev/null | wc -l | tr -d ' ')
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # died without leaving an input (e.g. in LLVMFuzzerInitialize): see the log
    fi
    summary="$summary
$(printf '%-12s %12s %8s' "$t" "$execs" "$crashes")"
    if [ "$crashes" -ne 0 ]; then
        status=1
        echo "fuzz: $t crashed (exit $rc); inputs in $art/, log $log" >&2
        grep -m 3 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" >&2
    fi
done

echo
printf '%-12s %12s %8s' "target" "execs" "crashes"
echo "$summary"
exit $status
