#!/bin/sh
# scripts/deps.sh [SET...] — install the Debian packages a make target needs, or say how.
#
#   run    building and running carehubd and the agent programs (make, make run, make install)
#   demo   run + the Python the narrated day drives the agents with (make demo)
#   bench  demo; bench/egress.py installs Alertmanager itself (make bench)
#   test   run + the test tools (make check, fuzz, memcheck, soak), and the test-only
#          npm package (the Standard Webhooks reference, for verifying signatures)
#
# No argument means run. As root: 'apt-get update', then installs what is missing.
# Otherwise: prints the apt-get command and fails if anything is missing.
# A production host needs only the run set: no browser, no node, no test tool.
set -eu
cd "$(dirname "$0")/.."

# Building: the compiler and the libraries' headers (pkg-config names in the Makefile's PKGS).
BUILD_PKGS="gcc make pkg-config libzmq3-dev liblmdb-dev libmsgpack-dev libcurl4-openssl-dev
libyaml-dev libjansson-dev libsodium-dev libmicrohttpd-dev libsystemd-dev"
# Running: mdb_copy, for a backup of a running broker's store (docs/data-model.md).
RUN_PKGS="$BUILD_PKGS lmdb-utils"
# The agents driven from Python (scripts/demo.py, bench/*.py).
DEMO_PKGS="$RUN_PKGS python3 python3-zmq python3-msgpack"
# The test tools: add a package here when a test needs one (one list for make check,
# fuzz, memcheck and soak). chromium: the report pages; chromium-driver, python3-selenium:
# the web view in a real browser (test_web_view.py); prometheus: promtool; systemd:
# systemd-analyze verify of contrib/carehubd.service; clang: libFuzzer; valgrind: memcheck;
# man-db, groff-base: the man pages rendered with warnings on (tests/e2e/test_man_pages.py);
# python3-pytest-xdist: the end-to-end tests in two processes (make e2e, E2E_JOBS).
TEST_PKGS="$DEMO_PKGS libcmocka-dev python3-pytest python3-jsonschema python3-lmdb
chromium chromium-driver python3-selenium prometheus valgrind clang systemd man-db groff-base
python3-pytest-xdist"

want=""
npm_needed=0
[ $# -gt 0 ] || set -- run
for set in "$@"; do
    case $set in
    run) want="$want $RUN_PKGS" ;;
    demo | bench) want="$want $DEMO_PKGS" ;;
    test) want="$want $TEST_PKGS"; npm_needed=1 ;;
    *)
        echo "deps: unknown set '$set'; give one of run, demo, bench, test" >&2
        exit 64
        ;;
    esac
done

missing=""
for p in $want; do
    case " $missing " in *" $p "*) continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ "$npm_needed" = 1 ]; then
    # node and npm: any installation will do (the machine may have its own build).
    command -v node >/dev/null 2>&1 || missing="$missing nodejs"
    command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi

if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "deps ($*): installing:$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing >&2
    else
        echo "deps ($*): missing Debian packages:$missing" >&2
        echo "deps: run:  sudo apt-get update && sudo apt-get install -y$missing" >&2
        exit 1
    fi
fi

# Test-only npm package, pinned by package-lock.json.
v=tests/e2e/webhook-verify
if [ "$npm_needed" = 1 ] && [ -f "$v/package-lock.json" ] && [ ! -d "$v/node_modules/standardwebhooks" ]; then
    echo "deps: npm ci in $v (standardwebhooks, for the signature tests)" >&2
    (cd "$v" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
