#!/usr/bin/env bash
# out_of_tree.sh - a flow plugin compiled outside the build, with one cc
# command against include/ only, passes `flowlab check`, trains in a real
# `flowlab run` and is sampled from by `flowlab sample`.
set -eu
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
EXE=${FLOWLAB_EXE:?run through meson test}
unset FLOWLAB_PLUGIN_PATH

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
die() {
    echo "FAIL: $*"
    exit 1
}

# A plugin must be built with the host's fl_real.
real_flag=
if [ "${FLOWLAB_REAL:-float}" = double ]; then real_flag=-DFL_REAL_DOUBLE; fi

cp "$SRC/tests/plugins/good_flow.c" "$TMP/"
cd "$TMP"
cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden $real_flag -I "$SRC/include" good_flow.c -o "$TMP/shift.so"
nm -D --defined-only "$TMP/shift.so" | grep -q ' flowlab_plugin_entry$' || die "entry not exported"

"$EXE" check --plugin "$TMP/shift.so" >"$TMP/check.log" 2>&1 || {
    cat "$TMP/check.log"
    die "flowlab check --plugin shift.so failed"
}
grep -q '^shift: ' "$TMP/check.log" || die "check did not run the shift flow"
grep -q ' 0 failed$' "$TMP/check.log" || die "check reported failures"
grep -q '^affine-coupling: ' "$TMP/check.log" && die "check --plugin also checked built-in flows"
echo "ok: flowlab check --plugin shift.so"

cat >"$TMP/shift.ini" <<'EOF'
[experiment]
name = shift
seed = 2

[data]
type = moons
test_size = 2000

[flow.1]
type = affine-coupling
repeat = 4
hidden = 32,32

[flow.2]
type = shift

[train]
steps = 300
batch = 256
EOF

# Without the plugin the experiment names a flow nobody provides.
set +e
"$EXE" run "$TMP/shift.ini" --out "$TMP/norun" 2>"$TMP/err"
rc=$?
set -e
[ "$rc" = 4 ] || die "run without --plugin: exit code $rc, expected 4"
grep -q "no such flow" "$TMP/err" || die "run without --plugin: $(cat "$TMP/err")"

"$EXE" --quiet run "$TMP/shift.ini" --plugin "$TMP/shift.so" --out "$TMP/run" ||
    die "flowlab run with the shift plugin failed"
[ -f "$TMP/run/result.json" ] || die "no result.json"
nll=$(sed -n 's/^ *"test_nll": *\([-0-9.eE+]*\),$/\1/p' "$TMP/run/result.json")
[ -n "$nll" ] || die "no test_nll in result.json: $(cat "$TMP/run/result.json")"
awk -v x="$nll" 'BEGIN { exit !(x < 1.5) }' || die "test NLL $nll is not below 1.5"
grep -q '^\[flow.2\]$' "$TMP/run/config.ini" || die "config.ini lacks [flow.2]"
grep -q '^init = 0$' "$TMP/run/config.ini" || die "config.ini lacks the plugin's default key"
echo "ok: flowlab run with the shift plugin (test NLL $nll)"

# The plugin found through FLOWLAB_PLUGIN_PATH this time.
FLOWLAB_PLUGIN_PATH="$TMP/shift.so" "$EXE" sample "$TMP/run" -n 100 -o "$TMP/s.csv" ||
    die "flowlab sample failed"
lines=$(wc -l <"$TMP/s.csv")
[ "$lines" = 101 ] || die "s.csv has $lines lines, expected 101"
[ "$(head -n 1 "$TMP/s.csv")" = x0,x1 ] || die "s.csv header: $(head -n 1 "$TMP/s.csv")"
echo "ok: flowlab sample ($lines lines)"
