#!/bin/sh
# bench/run.sh — carehubd against the minimal durable baseline server (make bench).
#
# For each server in turn (bin/baseline, then bin/carehubd; BENCH_ROUNDS times,
# alternating): start it on an
# ephemeral loopback port with a fresh data directory, wait until it is ready, run
#   1. throughput: bin/loadgen -n $BENCH_AGENTS -w $BENCH_INFLIGHT -t $BENCH_SECONDS
#   2. latency (informational): bin/loadgen -n 1 -w 1 -t $BENCH_LATENCY_SECONDS
# then stop it with SIGTERM. Prints both results and carehubd/baseline ratios.
#
# Fails (exit 1) when a server does not start or stop cleanly, a loadgen run fails
# (no welcome, a nack, an event never acked, nothing acked) or the events/s ratio
# is below $BENCH_MIN_RATIO. See docs/bench.md.
#
# Environment (defaults):
#   BENCH_SECONDS=10          measured seconds of the throughput run (after 1 s warm-up)
#   BENCH_ROUNDS=3            throughput rounds per server, alternating; the medians are compared
#   BENCH_LATENCY_SECONDS=5   measured seconds of the latency run
#   BENCH_AGENTS=4            agents of the throughput run
#   BENCH_INFLIGHT=64         events in flight per agent in the throughput run
#   BENCH_MIN_RATIO=0.5       least carehubd/baseline events/s
#   BENCH_TMPDIR=/var/tmp     where the temporary data directories go: keep it on a
#                             real disk (tmpfs makes every fsync free)
#   BENCH_READY_TIMEOUT=10    seconds a server may take to become ready
#   CAREHUBD=bin/carehubd     the broker binary to measure
set -eu
cd "$(dirname "$0")/.."

secs=${BENCH_SECONDS:-10}
lat_secs=${BENCH_LATENCY_SECONDS:-5}
agents=${BENCH_AGENTS:-4}
inflight=${BENCH_INFLIGHT:-64}
min_ratio=${BENCH_MIN_RATIO:-0.5}
ready_timeout=${BENCH_READY_TIMEOUT:-10}
carehubd=${CAREHUBD:-bin/carehubd}
loadgen=bin/loadgen
baseline=bin/baseline

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

for v in "$secs" "$lat_secs" "$agents" "$inflight" "$min_ratio" "$ready_timeout"; do
    case $v in
        '' | *[!0-9.]* | *.*.*) die "'$v' is not a number (check the BENCH_* variables)" ;;
    esac
done
for v in "$agents" "$inflight"; do
    case $v in
        *[!0-9]* | 0) die "'$v' is not a whole number > 0 (BENCH_AGENTS, BENCH_INFLIGHT)" ;;
    esac
done

for b in "$loadgen" "$baseline" "$carehubd"; do
    [ -x "$b" ] || die "$b is missing: build it first (make all bin/loadgen bin/baseline)"
done

tmp=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/carehub-bench.XXXXXX") ||
    die "cannot make a temporary directory under ${BENCH_TMPDIR:-/var/tmp}"
server_pid=""      # the server running now, if any
server_name=""
loadgen_pid=""     # the loadgen running now, if any

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -n "$loadgen_pid" ]; then # it reports and exits once its events are answered
        kill -TERM "$loadgen_pid" 2>/dev/null || :
        wait "$loadgen_pid" 2>/dev/null || :
    fi
    if [ -n "$server_pid" ] && [ ! -f "$tmp/$server_name.status" ]; then
        kill -TERM "$server_pid" 2>/dev/null || :
        i=0
        while [ ! -f "$tmp/$server_name.status" ] && [ "$i" -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        [ -f "$tmp/$server_name.status" ] || kill -KILL "$server_pid" 2>/dev/null || :
    fi
    wait 2>/dev/null || :
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fstype=$(stat -f -c %T "$tmp" 2>/dev/null || echo unknown)
case $fstype in
    tmpfs | ramfs) say "warning: $tmp is on $fstype: commits cost no disk sync; set BENCH_TMPDIR to a disk" ;;
esac

# start NAME READYFILE CMD...: run CMD in the background as server NAME. A watcher
# subshell records the server's pid in $tmp/NAME.pid and, when it ends, its exit
# status in $tmp/NAME.status (polling the pid cannot tell a zombie from a live one).
start() {
    server_name=$1
    ready=$2
    shift 2
    rm -f "$ready" "$tmp/$server_name.status" "$tmp/$server_name.pid" # a round before left them
    (
        "$@" >"$tmp/$server_name.log" 2>&1 &
        echo $! >"$tmp/$server_name.pid"
        set +e
        wait $!
        echo $? >"$tmp/$server_name.status"
    ) 2>/dev/null & # the server's own output goes to its log; this quiets "Killed"
    i=0
    while [ ! -s "$tmp/$server_name.pid" ]; do
        sleep 0.05
        i=$((i + 1))
        [ $i -lt 100 ] || die "$server_name: did not start"
    done
    server_pid=$(cat "$tmp/$server_name.pid")

    # Bounded wait for the ready file's first line (the endpoint to connect to).
    limit=$(awk -v s="$ready_timeout" 'BEGIN { printf "%d", s * 10 }')
    i=0
    endpoint=""
    while :; do
        if [ -f "$tmp/$server_name.status" ]; then
            show_log
            die "$server_name exited with status $(cat "$tmp/$server_name.status") before it was ready"
        fi
        [ -s "$ready" ] && endpoint=$(head -n 1 "$ready")
        [ -n "$endpoint" ] && break
        [ $i -lt "$limit" ] || { show_log; die "$server_name: not ready after ${ready_timeout} s (no $ready)"; }
        sleep 0.1
        i=$((i + 1))
    done
    say "$server_name ready on $endpoint (pid $server_pid)"
}

show_log() {
    if [ -s "$tmp/$server_name.log" ]; then
        say "last lines of $server_name's log:"
        tail -n 20 "$tmp/$server_name.log" | sed 's/^/    /' >&2
    fi
}

# stop: SIGTERM the server, wait at most 10 s, fail unless it exits with status 0.
stop() {
    kill -TERM "$server_pid" 2>/dev/null || :
    i=0
    while [ ! -f "$tmp/$server_name.status" ]; do
        [ $i -lt 100 ] || { show_log; die "$server_name did not exit within 10 s of SIGTERM"; }
        sleep 0.1
        i=$((i + 1))
    done
    st=$(cat "$tmp/$server_name.status")
    server_pid=""
    [ "$st" = 0 ] || { show_log; die "$server_name exited with status $st after SIGTERM"; }
}

# run TAG ARGS...: loadgen against the running server; its JSON line goes to $tmp/TAG.json.
run() {
    tag=$1
    shift
    say "$server_name: loadgen $*"
    set +e
    # In the background, so that a signal to this script is handled at once.
    "$loadgen" -b "$endpoint" --json "$@" >"$tmp/$tag.json" 2>"$tmp/$tag.err" &
    loadgen_pid=$!
    wait $loadgen_pid
    lrc=$?
    loadgen_pid=""
    set -e
    sed 's/^/    /' "$tmp/$tag.err" >&2
    if [ -f "$tmp/$server_name.status" ]; then
        show_log
        die "$server_name died during the run (status $(cat "$tmp/$server_name.status"))"
    fi
    if [ $lrc -ne 0 ] || [ ! -s "$tmp/$tag.json" ]; then
        show_log
        die "loadgen against $server_name failed (exit $lrc)"
    fi
}

# num FILE KEY: a number from loadgen's one-line JSON.
num() {
    sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" "$1"
}

# line NAME TAG: one result line.
line() {
    printf '  %-9s %10.0f events/s   p50 %8.3f ms   p99 %8.3f ms\n' "$1" \
        "$(num "$tmp/$2.json" events_per_s)" "$(num "$tmp/$2.json" p50_ms)" "$(num "$tmp/$2.json" p99_ms)"
}

# ratio A B: A/B with two decimals ("n/a" when B is 0).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'
}

throughput_args="-n $agents -w $inflight -t $secs"
latency_args="-n 1 -w 1 -t $lat_secs"

rounds=${BENCH_ROUNDS:-3}
case $rounds in *[!0-9]* | '' | 0) die "BENCH_ROUNDS='$rounds' is not a whole number > 0" ;; esac

# The carehubd config: the bench agents, everything else default (the fallback
# agency takes every new case, so routing runs for every event).
conf="$tmp/carehub.yaml"

# bench_baseline ROUND [lat] / bench_carehubd ROUND [lat]: one fresh server, its runs, stop.
bench_baseline() {
    rm -rf "$tmp/baseline-data" && mkdir -p "$tmp/baseline-data"
    start baseline "$tmp/baseline.ready" "$baseline" -b 'tcp://127.0.0.1:*' -d "$tmp/baseline-data" \
        --ready-file "$tmp/baseline.ready"
    # shellcheck disable=SC2086  # the args are words on purpose
    run "base-tput-$1" $throughput_args
    # shellcheck disable=SC2086
    [ "${2:-}" = lat ] && run base-lat $latency_args
    stop
}

bench_carehubd() {
    rm -rf "$tmp/carehubd-data"
    {
        echo "# written by bench/run.sh"
        echo "broker:"
        echo "  listen: [\"tcp://127.0.0.1:*\"]"
        echo "  data_dir: $tmp/carehubd-data"
        echo "  security: none"
        echo "privacy: off"
        echo "agents:"
        i=0
        while [ $i -lt "$agents" ]; do
            echo "  - id: bench-school-$i"
            echo "    role: school"
            i=$((i + 1))
        done
    } >"$conf"
    start carehubd "$tmp/carehubd.ready" "$carehubd" -c "$conf" --ready-file "$tmp/carehubd.ready"
    # shellcheck disable=SC2086
    run "hub-tput-$1" $throughput_args
    # shellcheck disable=SC2086
    [ "${2:-}" = lat ] && run hub-lat $latency_args
    stop
}

# Alternate the two servers, round by round: disk speed drifts, and alternating
# spreads the drift over both. The ratio compares the medians.
r_i=1
while [ $r_i -le "$rounds" ]; do
    lat=""
    [ $r_i -eq 1 ] && lat=lat
    bench_baseline $r_i $lat
    bench_carehubd $r_i $lat
    r_i=$((r_i + 1))
done

# median TAG: the median events/s of the rounds of TAG.
median() {
    i=1
    while [ $i -le "$rounds" ]; do
        num "$tmp/$1-$i.json" events_per_s
        i=$((i + 1))
    done | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The round whose events/s is the median, for its latency figures.
median_round() {
    m=$(median "$1")
    i=1
    while [ $i -le "$rounds" ]; do
        if [ "$(num "$tmp/$1-$i.json" events_per_s)" = "$m" ]; then echo $i; return; fi
        i=$((i + 1))
    done
    echo 1
}

# ---- report ----
b_eps=$(median base-tput)
h_eps=$(median hub-tput)
b_mr=$(median_round base-tput)
h_mr=$(median_round hub-tput)
r=$(ratio "$h_eps" "$b_eps")
echo
echo "carehub bench: data on $fstype under ${BENCH_TMPDIR:-/var/tmp}; $rounds alternating rounds"
echo "throughput ($agents agents x $inflight in flight, $secs s), each round:"
i=1
while [ $i -le "$rounds" ]; do
    line "baseline" "base-tput-$i"
    line "carehubd" "hub-tput-$i"
    i=$((i + 1))
done
echo "median: baseline $(printf '%.0f' "$b_eps") events/s, carehubd $(printf '%.0f' "$h_eps") events/s"
echo "latency (1 agent x 1 in flight, $lat_secs s, informational):"
line baseline base-lat
line carehubd hub-lat
echo "ratio carehubd/baseline: $r (target >= $min_ratio)" \
    "  p50 x$(ratio "$(num "$tmp/hub-tput-$h_mr.json" p50_ms)" "$(num "$tmp/base-tput-$b_mr.json" p50_ms)")" \
    "  p99 x$(ratio "$(num "$tmp/hub-tput-$h_mr.json" p99_ms)" "$(num "$tmp/base-tput-$b_mr.json" p99_ms)")" \
    "  single in-flight p50 x$(ratio "$(num "$tmp/hub-lat.json" p50_ms)" "$(num "$tmp/base-lat.json" p50_ms)")"

if awk -v r="$h_eps" -v b="$b_eps" -v m="$min_ratio" 'BEGIN { exit !(b > 0 && r / b >= m) }'; then
    exit 0
fi
say "FAIL: carehubd reaches $r of the baseline's events/s; the target is >= $min_ratio"
exit 1
