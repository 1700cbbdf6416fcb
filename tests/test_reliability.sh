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

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    echo "  stderr: $(head -c 2000 "$TMP/err")"
    failures=$((failures + 1))
}

run() {
    "$EXE" "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
}

# expect_error NAME CODE TEXT...: exit CODE, exactly one line on stderr, a
# flowlab error containing every TEXT.
expect_error() {
    local name=$1 code=$2 before=$failures
    shift 2
    [ "$rc" = "$code" ] || fail "$name: exit code $rc, expected $code"
    local lines
    lines=$(wc -l <"$TMP/err")
    [ "$lines" = 1 ] || fail "$name: $lines lines on stderr, expected 1"
    grep -q '^flowlab' "$TMP/err" || fail "$name: stderr is not a flowlab message"
    for text in "$@"; do
        grep -qF -- "$text" "$TMP/err" || fail "$name: stderr lacks '$text'"
    done
    if [ "$failures" = "$before" ]; then echo "ok: $name"; fi
}

expect_ok() {
    local name=$1
    [ "$rc" = 0 ] || { fail "$name: exit code $rc, expected 0"; return; }
    echo "ok: $name"
}

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

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all reliability checks passed"
