#!/bin/sh
# make run: start carehubd in the foreground on CONFIG (default config/carehub.yaml),
# logging to stderr. The default config keeps its data under var/ and reads the
# data-protection key var/keys/data.key, created here on first run.
set -eu
config=${1:-config/carehub.yaml}
if [ "$config" = config/carehub.yaml ] && [ ! -f var/keys/data.key ]; then
    mkdir -p var/keys
    chmod 700 var var/keys
    (umask 077 && head -c 32 /dev/urandom > var/keys/data.key)
    echo "run: created var/keys/data.key (32 random bytes, mode 0600)" >&2
fi
echo "run: carehubd -c $config  (Ctrl-C stops it)" >&2
exec bin/carehubd -c "$config"
