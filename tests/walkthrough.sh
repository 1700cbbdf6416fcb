#!/usr/bin/env bash
# walkthrough.sh - docs/writing-a-layer.md, verbatim: the C file in the
# guide, the build command in the guide, the check, the INI file and the
# run and sample commands, with /tmp/walk replaced by a private folder and
# build/framework/flowlab by the flowlab under test. Also the guide's
# deliberate bug must make the check fail.
set -eu
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
EXE=${FLOWLAB_EXE:?run through meson test}
unset FLOWLAB_PLUGIN_PATH
DOC="$SRC/docs/writing-a-layer.md"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
die() {
    echo "FAIL: $*"
    exit 1
}

# The fenced block that follows the line `marker` (a literal prefix).
block_after() {
    awk -v m="$1" 'index($0, m) == 1 { f = 1; next } f && /^```/ { if (g) exit; g = 1; next } g { print }' "$DOC"
}
# The first line of the guide starting with `prefix`, paths rewritten.
command_line() {
    grep -m1 -- "^$1" "$DOC" | sed -e "s#/tmp/walk#$TMP#g" -e "s#build/framework/flowlab#$EXE#g"
}

block_after '`/tmp/walk/scale_shift.c`:' >"$TMP/scale_shift.c"
[ "$(wc -l <"$TMP/scale_shift.c")" -gt 50 ] || die "no C code block found in the guide"
block_after '`/tmp/walk/scale_shift.ini`' >"$TMP/scale_shift.ini"
grep -q 'type = scale-shift' "$TMP/scale_shift.ini" || die "no INI block found in the guide"

build=$(command_line 'cc -std=c11')
[ -n "$build" ] || die "no build command in the guide"
if [ "${FLOWLAB_REAL:-float}" = double ]; then build="$build -DFL_REAL_DOUBLE"; fi
(cd "$SRC" && eval "$build") || die "the guide's build command failed: $build"
echo "ok: built with: $build"

check=$(command_line 'build/framework/flowlab check --plugin /tmp/walk/scale_shift.so')
eval "$check" >"$TMP/check.out" 2>&1 || { cat "$TMP/check.out"; die "check failed: $check"; }
grep -q ' 0 failed$' "$TMP/check.out" || die "check reported failures"
echo "ok: $check"

# The guide's deliberate bug: drop the dlogdet term of da.
sed 's/ + p->dlogdet\[r\]//' "$TMP/scale_shift.c" >"$TMP/bug.c"
cmp -s "$TMP/scale_shift.c" "$TMP/bug.c" && die "the guide's code no longer has the dlogdet term"
bugbuild=$(echo "$build" | sed "s#scale_shift#bug#g")
(cd "$SRC" && eval "$bugbuild") || die "building the buggy copy failed"
if "$EXE" check --plugin "$TMP/bug.so" --dim 2 >"$TMP/bug.out" 2>&1; then
    cat "$TMP/bug.out"
    die "the kit passed the guide's buggy layer"
fi
grep -q 'FAILED: grad theta' "$TMP/bug.out" || { cat "$TMP/bug.out"; die "the bug was not named"; }
echo "ok: the buggy copy fails 'grad theta'"

# The same layer as expression graphs (the section without a backward pass).
block_after '`/tmp/walk/scale_shift_expr.c`:' >"$TMP/scale_shift_expr.c"
grep -q 'fl_ex_compile' "$TMP/scale_shift_expr.c" || die "no graph example in the guide"
xbuild=$(command_line 'cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden -I include /tmp/walk/scale_shift_expr.c')
[ -n "$xbuild" ] || die "no build command for the graph example"
if [ "${FLOWLAB_REAL:-float}" = double ]; then xbuild="$xbuild -DFL_REAL_DOUBLE"; fi
(cd "$SRC" && eval "$xbuild") || die "the graph example's build command failed: $xbuild"
xcheck=$(command_line 'build/framework/flowlab check --plugin /tmp/walk/scale_shift_expr.so')
eval "$xcheck" >"$TMP/xcheck.out" 2>&1 || { cat "$TMP/xcheck.out"; die "check failed: $xcheck"; }
grep -q ' 0 failed$' "$TMP/xcheck.out" || die "the graph example's check reported failures"
echo "ok: $xcheck"

run=$(command_line 'build/framework/flowlab run /tmp/walk/scale_shift.ini')
eval "$run" >"$TMP/run.out" || die "run failed: $run"
grep -q '^test NLL ' "$TMP/run.out" || die "run printed no test NLL"
grep -q 'type = scale-shift' "$TMP/run/config.ini" || die "config.ini lacks the layer"
grep -q 'init_log_scale = 0' "$TMP/run/config.ini" || die "config.ini lacks the resolved key"
echo "ok: $run"

sample=$(command_line 'build/framework/flowlab sample /tmp/walk/run')
[ "$(eval "$sample" | wc -l)" -eq 4 ] || die "sample did not print a header and 3 rows"
echo "ok: $sample"
echo "walkthrough passed"
