#!/usr/bin/env bash
# test_reliability.sh - issue 13's guarantees seen from the command line:
# crashing plugins are refused and everything else carries on; bad inputs
# that would once have changed a value silently are refused with ONE line
# naming the file and line (or option). Run by meson test, which sets
# FLOWLAB_EXE and FLOWLAB_TEST_DIR. See docs/reliability.md.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
TEST_DIR=${FLOWLAB_TEST_DIR:?run through meson test}
unset FLOWLAB_PLUGIN_PATH

. "$(dirname "$0")/lib.sh"

cat >"$TMP/good.ini" <<'EOF'
[experiment]
name = rel

[data]
type = moons
test_size = 100

[flow.1]
type = affine-coupling
repeat = 2
hidden = 8

[train]
steps = 3
batch = 16
EOF

# ---- plugin isolation ------------------------------------------------------

CRASHERS="$TEST_DIR/crash_init.so:$TEST_DIR/crash_exit.so:$TEST_DIR/crash_abort.so"

FLOWLAB_PLUGIN_PATH=$CRASHERS run plugins
before=$failures
[ "$rc" = 0 ] || fail "plugins with crashing plugins on the path: exit $rc"
grep -q 'affine-coupling' "$TMP/out" || fail "plugins: the built-in flows are not listed"
grep -qF "crash_init.so refused: crashed in its entry point or while loading (signal 11" "$TMP/out" \
    || fail "plugins: crash_init.so is not listed as refused with its signal"
grep -qF "crash_exit.so refused: ended the process in its entry point or while loading (exit status 3)" \
    "$TMP/out" || fail "plugins: crash_exit.so is not listed as refused with its exit status"
grep -qF "crash_abort.so refused: crashed in its entry point or while loading (signal 6" "$TMP/out" \
    || fail "plugins: crash_abort.so is not listed as refused"
[ "$(grep -c 'warning: plugin .* refused' "$TMP/err")" = 3 ] || fail "plugins: not one warning per crashing plugin"
[ "$failures" = "$before" ] && echo "ok: plugins lists and refuses crashing plugins"

# a folder on the path holding them is scanned the same way
mkdir -p "$TMP/pl"
for p in crash_init crash_exit crash_abort good_flow; do ln -s "$TEST_DIR/$p.so" "$TMP/pl/$p.so"; done
FLOWLAB_PLUGIN_PATH=$TMP/pl run --quiet run "$TMP/good.ini" --out "$TMP/run1"
before=$failures
[ "$rc" = 0 ] || fail "run with crashing plugins in a folder on the path: exit $rc"
[ -f "$TMP/run1/result.json" ] || fail "run with crashing plugins: no result.json"
[ "$(grep -c 'refused' "$TMP/err")" = 3 ] || fail "run: not one warning per crashing plugin"
[ "$failures" = "$before" ] && echo "ok: a run carries on past crashing plugins"

# a crashing --plugin is an error: exit 4, naming the plugin and the reason
run --plugin "$TEST_DIR/crash_init.so" plugins
expect_error "--plugin that segfaults" 4 "crash_init.so" "signal 11"
run --plugin "$TEST_DIR/crash_exit.so" run "$TMP/good.ini" --out "$TMP/run2"
expect_error "--plugin that calls exit(3)" 4 "crash_exit.so" "exit status 3"
[ -e "$TMP/run2" ] && fail "a run refused for its --plugin made its directory"

# one that never returns from its entry point is killed after 10 s
start=$(date +%s)
run --plugin "$TEST_DIR/crash_hang.so" plugins
expect_error "--plugin that hangs" 4 "crash_hang.so" "did not return from its entry point within 10 s"
[ $(($(date +%s) - start)) -lt 60 ] || fail "the hanging plugin's probe took over a minute"

# ---- command-line integers ---------------------------------------------------

# once: -1 wrapped to 2^64 - 1 and 2^64 saturated to it, the same stream
RUN=$TMP/run1
run sample "$RUN" -n 3 --seed 18446744073709551615
expect_ok "sample --seed 2^64-1"
cp "$TMP/out" "$TMP/max.csv"
for bad in -1 18446744073709551616 99999999999999999999999 " 5" +5 ""; do
    run sample "$RUN" -n 3 --seed "$bad"
    expect_error "sample --seed '$bad'" 2 "--seed"
done
run check --flow reverse --seed -1
expect_error "check --seed -1" 2 "--seed '-1'" "expected a whole number from 0 to 18446744073709551615"
run eval "$RUN" --k -1
expect_error "eval --k -1" 2 "--k"

# ---- INI and data files ------------------------------------------------------

# a 12-entry hidden list on one long line: once cut to 10 layers
hidden=$(printf '64, %.0s' $(seq 11))64
line="hidden = $hidden$(printf '%*s' 200 '')"
sed "s/^hidden = 8$/$line/" "$TMP/good.ini" >"$TMP/long.ini"
lineno=$(grep -n '^hidden' "$TMP/long.ini" | cut -d: -f1)
run run "$TMP/long.ini" --out "$TMP/run3"
expect_error "over-long INI line" 3 "long.ini:$lineno: line is" "reads at most"
[ -e "$TMP/run3" ] && fail "a refused experiment made its run directory"

# a sweep's [sweep] lines may be longer: they reach inih commented out
lrs=$(seq -s ', ' -f '0.00%g' 10 50)
{ cat "$TMP/good.ini"; printf '\n[sweep]\ntrain.lr = %s\n' "$lrs"; } >"$TMP/sweep.ini"
[ "$(grep '^train.lr' "$TMP/sweep.ini" | wc -c)" -gt 250 ] || fail "the sweep line is not long"
run sweep "$TMP/sweep.ini" --dry-run --out "$TMP/sw"
expect_ok "sweep with a [sweep] line over inih's limit"

printf '[experiment]\nname = a\0b\n' >"$TMP/nul.ini"
run run "$TMP/nul.ini" --out "$TMP/run4"
expect_error "NUL byte in an INI file" 3 "nul.ini:2: contains a NUL byte"

# --set values that config.ini could not give back
run run "$TMP/good.ini" --out "$TMP/run5" --set "experiment.name=a ;b"
expect_error "--set value with a comment" 3 "--set experiment.name" "comment"

# CSV: a NUL byte, a value too large for fl_real
printf 'x,y\n1,2\n3,4\0\n' >"$TMP/nul.csv"
sed "s|^type = moons|type = csv\npath = $TMP/nul.csv|; /^test_size/d" "$TMP/good.ini" >"$TMP/csv.ini"
run run "$TMP/csv.ini" --out "$TMP/run6"
expect_error "NUL byte in a CSV file" 5 "nul.csv:3: field 2 contains a NUL byte"

finish reliability
