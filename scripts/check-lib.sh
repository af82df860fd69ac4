#!/bin/sh
# scripts/check-lib.sh DIR — libcarehub as an integrator gets it (make libcheck).
#
# DIR holds libcarehub.a, libcarehub.so.* and libcarehub-uninstalled.pc (make lib).
#  1. The archive and the shared object define no global symbol but carehub_*
#     (the checker is first shown a planted one, which it must report).
#  2. The shared object carries the soname libcarehub.so.<major of carehub_version()>.
#  3. examples/libcarehub-example.c, a program outside the tree, builds with
#     `pkg-config --cflags --libs libcarehub` (shared) and against the archive,
#     and both runs pass (store-and-forward through the public API only).
set -eu
dir=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-gcc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/carehub-libcheck.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say() { printf 'libcheck: %s\n' "$*"; }
fail() { printf 'libcheck: FAIL: %s\n' "$*" >&2; exit 1; }

# Defined global symbols whose name does not start with carehub_ (the shared
# object's version node, an absolute symbol named by agents/lib/libcarehub.map,
# is not code or data).
foreign() {
    nm "$@" 2>/dev/null |
        awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ && $3 !~ /^carehub_/ && !($2 == "A" && $3 ~ /^LIBCAREHUB_[0-9]+$/) { print $3 }' |
        sort -u
}

# 1. The checker reports a planted symbol, then the library's two forms.
printf 'int planted_symbol(void) { return 1; }\nint carehub_fine(void) { return 0; }\n' >"$tmp/planted.c"
$cc -c "$tmp/planted.c" -o "$tmp/planted.o" && ar rcs "$tmp/libplanted.a" "$tmp/planted.o"
[ "$(foreign "$tmp/libplanted.a")" = planted_symbol ] ||
    fail "the symbol check does not see a planted global symbol (nm or awk changed?)"
so=$(ls "$dir"/libcarehub.so.*.*.* 2>/dev/null | head -n 1)
[ -f "$dir/libcarehub.a" ] && [ -n "$so" ] || fail "$dir has no libcarehub.a or libcarehub.so.X.Y.Z (make lib)"
bad=$(foreign "$dir/libcarehub.a")
[ -z "$bad" ] || fail "libcarehub.a exports symbols that are not carehub_*: $(echo $bad)"
bad=$(foreign -D --defined-only "$so")
[ -z "$bad" ] || fail "$(basename "$so") exports symbols that are not carehub_*: $(echo $bad)"
n_a=$(nm "$dir/libcarehub.a" | awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ && $3 ~ /^carehub_/' | wc -l)
n_so=$(nm -D --defined-only "$so" | awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ && $3 ~ /^carehub_/' | wc -l)
[ "$n_a" -ge 16 ] && [ "$n_so" -ge 16 ] || fail "only $n_a (archive) / $n_so (shared) carehub_* symbols: the API is not exported"
say "exports: $n_a carehub_* symbols in libcarehub.a, $n_so in $(basename "$so"), nothing else"

# 2. The soname: libcarehub.so.<major>, the major of the version pkg-config gives
#    (which the example checks against carehub_version() below).
export PKG_CONFIG_PATH="$dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
version=$(pkg-config --modversion libcarehub) || fail "pkg-config does not find libcarehub in $dir"
want=libcarehub.so.${version%%.*}
soname=$(objdump -p "$so" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = "$want" ] || fail "$(basename "$so") has soname '$soname', not $want"
say "soname: $soname (libcarehub $version)"

# 3. A program outside the tree, through pkg-config.
cp "$here/examples/libcarehub-example.c" "$tmp/"
cd "$tmp"
# shellcheck disable=SC2046  # pkg-config's output is words on purpose
$cc -std=c11 -Wall -Wextra -Werror -o example-shared libcarehub-example.c \
    $(pkg-config --cflags --libs libcarehub) -Wl,-rpath,"$dir" ||
    fail "the example does not build with pkg-config --cflags --libs libcarehub"
# shellcheck disable=SC2046
$cc -std=c11 -Wall -Wextra -Werror -o example-static libcarehub-example.c \
    $(pkg-config --cflags libcarehub) "$dir/libcarehub.a" \
    $(pkg-config --libs $(pkg-config --print-requires-private libcarehub)) ||
    fail "the example does not build against libcarehub.a"
ldd ./example-shared | grep -q "$want => $dir/" || fail "example-shared does not load $dir/$want"
for form in shared static; do
    ./example-$form "$tmp/spool-$form" >"$tmp/$form.out" || fail "the example against the $form library failed"
    grep -qx "libcarehub $version" "$tmp/$form.out" ||
        fail "carehub_version() of the $form library is not $version: $(head -n 1 "$tmp/$form.out")"
done
say "an outside program builds with pkg-config and runs against both"
