#!/bin/sh
# Install the Debian packages carehub needs, or say how.
# Run as root: installs what is missing with apt-get (running 'apt-get update' first).
# Otherwise: prints the command to run and fails if anything is missing.
set -eu
PKGS="gcc make pkg-config libzmq3-dev liblmdb-dev lmdb-utils libmsgpack-dev libcurl4-openssl-dev
libyaml-dev libjansson-dev libsodium-dev libcmocka-dev
python3 python3-zmq python3-msgpack python3-pytest python3-jsonschema"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
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
