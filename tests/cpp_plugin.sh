#!/usr/bin/env bash
# cpp_plugin.sh - a flow plugin written in C++ (tests/plugins/cpp_flow.cpp)
# exports the C entry and nothing else, passes `flowlab check`, and trains
# in a real `flowlab run`; the same source built by hand with the one
# command docs/plugin-abi.md gives passes too.
#
#   cpp_plugin.sh PLUGIN.so CXX [CXX-ARGS...]   (run through meson test)
set -eu
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
EXE=${FLOWLAB_EXE:?run through meson test}
unset FLOWLAB_PLUGIN_PATH
PLUGIN=${1:?plugin path}
shift
CXX=("$@")

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
die() {
    echo "FAIL: $*"
    exit 1
}

# Exports: the extern "C" entry, unmangled, and nothing else (no template
# instances of the standard library, no mangled C++ names).
syms=$(nm -D --defined-only "$PLUGIN" | awk '{ print $3 }')
[ "$syms" = flowlab_plugin_entry ] || die "exported symbols: $(echo $syms)"
echo "ok: the C++ plugin exports only flowlab_plugin_entry"

check() { # check NAME ARGS...: flowlab check passes with the cpp-affine layer
    local name=$1
    shift
    "$EXE" check --plugin "$@" >"$TMP/check.log" 2>&1 || {
        cat "$TMP/check.log"
        die "flowlab check ($name) failed"
    }
    grep -q '^cpp-affine: 2 configurations' "$TMP/check.log" || {
        cat "$TMP/check.log"
        die "check ($name) did not run cpp-affine in both configurations"
    }
    grep -q ' 0 failed$' "$TMP/check.log" || die "check ($name) reported failures"
    echo "ok: flowlab check ($name): $(tail -n 1 "$TMP/check.log")"
}
check "meson build" "$PLUGIN"
check "dim 7, 33 rows" "$PLUGIN" --flow cpp-affine --dim 7 --rows 33

# The documented one-command build, with C++'s strict warnings on top.
real_flag=
if [ "${FLOWLAB_REAL:-float}" = double ]; then real_flag=-DFL_REAL_DOUBLE; fi
"${CXX[@]}" -std=c++17 -O2 -shared -fPIC -fvisibility=hidden -fvisibility-inlines-hidden \
    -Wall -Wextra -Wpedantic -Wold-style-cast -Werror $real_flag \
    -Wl,--version-script="$SRC/plugins/plugin.map" -I "$SRC/include" \
    "$SRC/tests/plugins/cpp_flow.cpp" -o "$TMP/affine.so" || die "the documented build failed"
[ "$(nm -D --defined-only "$TMP/affine.so" | awk '{ print $3 }')" = flowlab_plugin_entry ] ||
    die "the documented build exports more than the entry"
check "documented build" "$TMP/affine.so"

cat >"$TMP/affine.ini" <<'INI'
[experiment]
name = cpp
seed = 3

[data]
type = moons
test_size = 2000

[flow.1]
type = affine-coupling
repeat = 4
hidden = 32,32

[flow.2]
type = cpp-affine
init_std = 0.01

[train]
steps = 300
batch = 256
INI
"$EXE" --quiet run "$TMP/affine.ini" --plugin "$PLUGIN" --out "$TMP/run" ||
    die "flowlab run with the C++ plugin failed"
nll=$(sed -n 's/^ *"test_nll": *\([-0-9.eE+]*\),$/\1/p' "$TMP/run/result.json")
[ -n "$nll" ] || die "no test_nll in result.json: $(cat "$TMP/run/result.json")"
awk -v x="$nll" 'BEGIN { exit !(x < 1.5) }' || die "test NLL $nll is not below 1.5"
grep -q '^type = cpp-affine$' "$TMP/run/config.ini" || die "config.ini lacks the C++ layer"
grep -q '^scale = true$' "$TMP/run/config.ini" || die "config.ini lacks the plugin's default key"
echo "ok: flowlab run with the C++ plugin (test NLL $nll)"

# Sampling runs the C++ layer's inverse.
"$EXE" sample "$TMP/run" -n 50 -o "$TMP/s.csv" --plugin "$PLUGIN" || die "flowlab sample failed"
[ "$(wc -l <"$TMP/s.csv")" = 51 ] || die "s.csv has $(wc -l <"$TMP/s.csv") lines, expected 51"
echo "ok: flowlab sample through the C++ inverse"
