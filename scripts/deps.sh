#!/bin/sh
# Install what carehub needs, or say how.
# As root: installs missing Debian packages with apt-get (running 'apt-get update'
# first) and the test-only npm package (the Standard Webhooks reference, for
# verifying signatures in tests). Otherwise: prints the commands and fails if
# anything is missing.
set -eu
cd "$(dirname "$0")/.."
PKGS="gcc make pkg-config libzmq3-dev liblmdb-dev lmdb-utils libmsgpack-dev libcurl4-openssl-dev
libyaml-dev libjansson-dev libsodium-dev libcmocka-dev
python3 python3-zmq python3-msgpack python3-pytest python3-jsonschema python3-lmdb
chromium libmicrohttpd-dev prometheus valgrind clang"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm: any installation will do (the machine may have its own build).
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "deps: installing:$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing >&2
    else
        echo "deps: missing Debian packages:$missing" >&2
        echo "deps: run:  sudo apt-get update && sudo apt-get install -y$missing" >&2
        exit 1
    fi
fi

# Test-only npm package, pinned by package-lock.json.
v=tests/e2e/webhook-verify
if [ -f "$v/package-lock.json" ] && [ ! -d "$v/node_modules/standardwebhooks" ]; then
    echo "deps: npm ci in $v (standardwebhooks, for the signature tests)" >&2
    (cd "$v" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
