#!/bin/sh
# scripts/check-install.sh — make install and make uninstall as a packager and an
# operator use them (make opscheck, part of make check; issue 16 items 1 and 3).
#
#  1. make install DESTDIR=TMP PREFIX=/usr lays out the programs, libcarehub (shared
#     object with its soname links, archive, headers, libcarehub.pc with the installed
#     paths), the schemas, the man pages man/ holds, the unit and the config.
#  2. A program outside the tree builds against the staged library with pkg-config
#     (PKG_CONFIG_SYSROOT_DIR, PKG_CONFIG_PATH) and runs: carehub_version() is the .pc's.
#  3. The installed unit passes systemd-analyze verify (its ExecStart pointed at the
#     staged carehubd, which must exist; man pages looked up in the staged tree).
#  4. An edited config survives a second install.
#  5. Installed into a real PREFIX (no DESTDIR), carehubd finds its schemas under
#     PREFIX/share/carehub/schemas and starts; with them gone it refuses to start,
#     naming that directory (it does not fall back to the source tree).
#  6. make uninstall leaves nothing but the config.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cc=${CC:-gcc}
make="${MAKE:-make} --no-print-directory -s"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/carehub-install.XXXXXX")
pid=""
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || :
    rm -rf "$tmp"
}
trap cleanup EXIT
say() { printf 'check-install: %s\n' "$*"; }
fail() { printf 'check-install: FAIL: %s\n' "$*" >&2; exit 1; }

root=$tmp/root
# LDCONFIG=: a test does not touch the machine's library cache.
$make install DESTDIR="$root" PREFIX=/usr LDCONFIG=: >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "make install DESTDIR=$root PREFIX=/usr failed"; }

# 1. The layout.
version=$(sed -n 's/^#define CAREHUB_VERSION_STR "\(.*\)"/\1/p' agents/lib/carehub.c)
major=${version%%.*}
want="usr/sbin/carehubd usr/lib/libcarehub.a usr/lib/libcarehub.so.$version
usr/lib/pkgconfig/libcarehub.pc usr/include/carehub.h usr/include/carehub_wire.h
usr/lib/systemd/system/carehubd.service etc/carehub/carehub.yaml usr/share/carehub/carehub.yaml.dist
usr/share/carehub/prometheus/carehub-alerts.yml"
for p in agents/carehub-*.c agents/carehub.c; do
    want="$want usr/bin/$(basename "$p" .c)"
done
for s in schemas/*.json; do
    want="$want usr/share/carehub/$s"
done
n_man=0
for m in man/*.1 man/*.5 man/*.8; do
    [ -f "$m" ] || continue
    want="$want usr/share/man/man${m##*.}/$(basename "$m")"
    n_man=$((n_man + 1))
done
n=0
for f in $want; do
    [ -f "$root/$f" ] || fail "make install did not write $f"
    n=$((n + 1))
done
for x in usr/sbin/carehubd usr/bin/carehub usr/bin/carehub-send; do
    [ -x "$root/$x" ] || fail "$x is not executable"
done
[ "$(readlink "$root/usr/lib/libcarehub.so.$major")" = "libcarehub.so.$version" ] ||
    fail "usr/lib/libcarehub.so.$major is not a link to libcarehub.so.$version"
[ "$(readlink "$root/usr/lib/libcarehub.so")" = "libcarehub.so.$major" ] ||
    fail "usr/lib/libcarehub.so is not a link to libcarehub.so.$major"
grep -qx 'libdir=/usr/lib' "$root/usr/lib/pkgconfig/libcarehub.pc" &&
    grep -qx 'includedir=/usr/include' "$root/usr/lib/pkgconfig/libcarehub.pc" ||
    fail "libcarehub.pc does not name the installed libdir and includedir"
grep -qx 'ExecStart=/usr/sbin/carehubd -c /etc/carehub/carehub.yaml' \
    "$root/usr/lib/systemd/system/carehubd.service" ||
    fail "the installed unit does not start /usr/sbin/carehubd on /etc/carehub/carehub.yaml"
grep -q '^  data_dir: /var/lib/carehub/data' "$root/etc/carehub/carehub.yaml" ||
    fail "the installed config does not keep its data in /var/lib/carehub (the unit's StateDirectory)"
# --check-config reads the data key, made by the unit's first start: a stand-in here.
(umask 077 && head -c 32 /dev/urandom >"$tmp/data.key")
sed "s|/var/lib/carehub/keys/data.key|$tmp/data.key|" "$root/etc/carehub/carehub.yaml" >"$tmp/installed.yaml"
"$root/usr/sbin/carehubd" --check-config -c "$tmp/installed.yaml" >"$tmp/cc.log" 2>&1 ||
    { cat "$tmp/cc.log" >&2; fail "the installed config does not pass carehubd --check-config"; }
say "layout: $n files under DESTDIR (PREFIX=/usr; $n_man man pages), soname links, .pc paths, unit, config"

# 2. An outside program against the staged library, through pkg-config.
cp examples/libcarehub-example.c "$tmp/"
(
    cd "$tmp"
    export PKG_CONFIG_SYSROOT_DIR="$root" PKG_CONFIG_PATH="$root/usr/lib/pkgconfig"
    [ "$(pkg-config --modversion libcarehub)" = "$version" ] || fail "pkg-config does not find libcarehub $version"
    # shellcheck disable=SC2046  # pkg-config's output is words on purpose
    $cc -std=c11 -Wall -Wextra -Werror -o example libcarehub-example.c \
        $(pkg-config --cflags --libs libcarehub) || fail "the example does not build against the installed library"
    LD_LIBRARY_PATH="$root/usr/lib" ldd ./example | grep -q "libcarehub.so.$major => $root/usr/lib/" ||
        fail "the example does not load $root/usr/lib/libcarehub.so.$major"
    LD_LIBRARY_PATH="$root/usr/lib" ./example "$tmp/spool" >"$tmp/example.out" || fail "the example failed"
    grep -qx "libcarehub $version" "$tmp/example.out" ||
        fail "carehub_version() is not $version: $(head -n 1 "$tmp/example.out")"
)
say "an outside program builds with pkg-config against DESTDIR/usr and runs (libcarehub $version)"

# 3. systemd-analyze verify of the installed unit.
mkdir -p "$tmp/unit"
sed "s|^ExecStart=/usr/sbin/carehubd|ExecStart=$root/usr/sbin/carehubd|" \
    "$root/usr/lib/systemd/system/carehubd.service" >"$tmp/unit/carehubd.service"
if [ -f "$root/usr/share/man/man8/carehubd.8" ] && command -v man >/dev/null 2>&1; then
    man_opt="--man=yes"
    man_said="man:carehubd(8) found"
else
    man_opt="--man=no"
    man_said="man:carehubd(8) not checked: no man/carehubd.8 in the tree or no man"
fi
MANPATH="$root/usr/share/man" systemd-analyze verify "$man_opt" "$tmp/unit/carehubd.service" \
    >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify carehubd.service"; }
[ ! -s "$tmp/verify.log" ] || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify has warnings"; }
say "systemd-analyze verify carehubd.service: clean ($man_said)"

# 4. The config is the operator's: a second install keeps it.
echo "# edited by the operator" >>"$root/etc/carehub/carehub.yaml"
$make install DESTDIR="$root" PREFIX=/usr LDCONFIG=: >"$tmp/install2.log" 2>&1 ||
    { cat "$tmp/install2.log" >&2; fail "a second make install failed"; }
grep -qx '# edited by the operator' "$root/etc/carehub/carehub.yaml" || fail "a second install overwrote the config"
grep -q "kept $root/etc/carehub/carehub.yaml" "$tmp/install2.log" || fail "a second install did not say it kept the config"
say "a second install keeps the edited config and says so"

# 5. Installed in a real prefix, carehubd reads its schemas from there.
prefix=$tmp/prefix
$make install PREFIX="$prefix" SYSCONFDIR="$tmp/etc" LDCONFIG=: >"$tmp/install3.log" 2>&1 ||
    { cat "$tmp/install3.log" >&2; fail "make install PREFIX=$prefix failed"; }
cat >"$tmp/broker.yaml" <<EOF
broker:
  listen: ["tcp://127.0.0.1:*"]
  data_dir: $tmp/data
  security: none
privacy: off
agents:
  - {id: school-1, role: school}
EOF
start_broker() { # $1: log; 0 when it wrote its ready file, 1 when it exited first
    rm -f "$tmp/ready"
    "$prefix/sbin/carehubd" -c "$tmp/broker.yaml" --ready-file "$tmp/ready" >"$1" 2>&1 &
    pid=$!
    i=0
    while [ ! -s "$tmp/ready" ]; do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" || :; pid=""; return 1; }
        i=$((i + 1))
        [ "$i" -lt 600 ] || fail "carehubd wrote no ready file in 30 s: $(cat "$1")"
        sleep 0.05
    done
    return 0
}
"$prefix/sbin/carehubd" --help | grep -qx "schemas: $prefix/share/carehub/schemas (.*" ||
    fail "carehubd --help of the installed broker does not name $prefix/share/carehub/schemas"
start_broker "$tmp/run1.log" || fail "the installed carehubd did not start: $(cat "$tmp/run1.log")"
kill -TERM "$pid" && wait "$pid" || fail "the installed carehubd did not stop cleanly: $(cat "$tmp/run1.log")"
pid=""
mv "$prefix/share/carehub/schemas" "$tmp/schemas-away"
if start_broker "$tmp/run2.log"; then
    fail "carehubd started without $prefix/share/carehub/schemas: it reads schemas from elsewhere"
fi
grep -q "$prefix/share/carehub/schemas" "$tmp/run2.log" ||
    fail "without its schemas carehubd does not name $prefix/share/carehub/schemas: $(cat "$tmp/run2.log")"
mv "$tmp/schemas-away" "$prefix/share/carehub/schemas"
say "the installed carehubd loads $(ls "$prefix/share/carehub/schemas" | wc -l) schemas from PREFIX/share/carehub/schemas, and no others"

# 6. make uninstall leaves the config and nothing else.
$make uninstall DESTDIR="$root" PREFIX=/usr >"$tmp/uninstall.log" 2>&1 ||
    { cat "$tmp/uninstall.log" >&2; fail "make uninstall failed"; }
left=$(cd "$root" && find . ! -type d | sort)
[ "$left" = "./etc/carehub/carehub.yaml" ] || fail "make uninstall left more than the config: $(echo $left)"
grep -q "left $root/etc/carehub in place" "$tmp/uninstall.log" || fail "make uninstall does not say it left the config"
say "make uninstall removes all but etc/carehub/carehub.yaml, and says so"
