#!/usr/bin/env bash
# walkthrough.sh - docs/writing-a-layer.md, verbatim: the new-layer
# commands and the files they write (which must be the guide's code
# blocks), the build commands in the guide, the checks (with --set), the
# INI file and the run and sample commands, with /tmp/walk replaced by a
# private folder and build/framework/flowlab by the flowlab under test.
# Also the guide's deliberate bug must make the check fail, dump it and
# replay to the same failure.
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

# The guide starts with `flowlab new-layer`: the file it writes is the
# guide's code block, and the build and check commands it prints work.
newl=$(command_line 'build/framework/flowlab new-layer scale_shift ')
[ -n "$newl" ] || die "no new-layer command in the guide"
eval "$newl" >"$TMP/new.out" || die "new-layer failed: $newl"
block_after '`/tmp/walk/scale_shift.c`' >"$TMP/doc_scale_shift.c"
[ "$(wc -l <"$TMP/doc_scale_shift.c")" -gt 20 ] || die "no C code block found in the guide"
cmp -s "$TMP/doc_scale_shift.c" "$TMP/scale_shift.c" ||
    die "the guide's scale_shift.c is not what new-layer writes: $(diff "$TMP/doc_scale_shift.c" "$TMP/scale_shift.c")"
grep -q 'fl_ex_compile' "$TMP/scale_shift.c" || die "the guide's layer is not built on graphs"
printed_build=$(awk '$0 == "build it:" { getline; sub(/^  /, ""); print; exit }' "$TMP/new.out")
(cd "$TMP" && eval "$printed_build") || die "new-layer's printed build command failed: $printed_build"
echo "ok: $newl writes the guide's file; its build command works"
block_after '`/tmp/walk/scale_shift.ini`' >"$TMP/scale_shift.ini"
grep -q 'type = scale-shift' "$TMP/scale_shift.ini" || die "no INI block found in the guide"

build=$(command_line 'cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden -I include /tmp/walk/scale_shift.c')
[ -n "$build" ] || die "no build command in the guide"
if [ "${FLOWLAB_REAL:-float}" = double ]; then build="$build -DFL_REAL_DOUBLE"; fi
(cd "$SRC" && eval "$build") || die "the guide's build command failed: $build"
echo "ok: built with: $build"

check=$(command_line 'build/framework/flowlab check --plugin /tmp/walk/scale_shift.so')
eval "$check" >"$TMP/check.out" 2>&1 || { cat "$TMP/check.out"; die "check failed: $check"; }
grep -q ' 0 failed$' "$TMP/check.out" || die "check reported failures"
echo "ok: $check"
setcheck=$(command_line 'build/framework/flowlab check --plugin /tmp/walk/scale_shift.so --set ')
[ -n "$setcheck" ] || die "no check --set example in the guide"
eval "$setcheck" >"$TMP/set.out" 2>&1 || { cat "$TMP/set.out"; die "check failed: $setcheck"; }
echo "ok: $setcheck"

# The hand-written form: new-layer --kind hand writes the guide's second file.
handl=$(command_line 'build/framework/flowlab new-layer scale_shift_hand --kind hand')
[ -n "$handl" ] || die "no new-layer --kind hand command in the guide"
eval "$handl" >/dev/null || die "new-layer failed: $handl"
block_after '`/tmp/walk/scale_shift_hand.c`' >"$TMP/doc_hand.c"
cmp -s "$TMP/doc_hand.c" "$TMP/scale_shift_hand.c" ||
    die "the guide's scale_shift_hand.c is not what new-layer --kind hand writes"
hbuild=$(command_line 'cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden -I include /tmp/walk/scale_shift_hand.c')
[ -n "$hbuild" ] || die "no build command for the hand-written layer"
if [ "${FLOWLAB_REAL:-float}" = double ]; then hbuild="$hbuild -DFL_REAL_DOUBLE"; fi
(cd "$SRC" && eval "$hbuild") || die "the hand-written layer's build command failed: $hbuild"
hcheck=$(command_line 'build/framework/flowlab check --plugin /tmp/walk/scale_shift_hand.so')
eval "$hcheck" >"$TMP/hcheck.out" 2>&1 || { cat "$TMP/hcheck.out"; die "check failed: $hcheck"; }
grep -q ' 0 failed$' "$TMP/hcheck.out" || die "the hand-written layer's check reported failures"
echo "ok: $hcheck"

# The guide's deliberate bug: drop the dlogdet term of da. The check fails,
# says what it compared, dumps it, and the replay fails the same way.
sed 's/ + p->dlogdet\[r\]//' "$TMP/scale_shift_hand.c" >"$TMP/bug.c"
cmp -s "$TMP/scale_shift_hand.c" "$TMP/bug.c" && die "the guide's code no longer has the dlogdet term"
bugbuild=$(echo "$hbuild" | sed "s#scale_shift_hand#bug#g")
(cd "$SRC" && eval "$bugbuild") || die "building the buggy copy failed"
bugcheck=$(command_line 'build/framework/flowlab check --plugin /tmp/walk/bug.so')
[ -n "$bugcheck" ] || die "no check of the buggy copy in the guide"
if eval "$bugcheck" >"$TMP/bug.out" 2>&1; then
    cat "$TMP/bug.out"
    die "the kit passed the guide's buggy layer"
fi
grep -q 'FAILED: grad theta' "$TMP/bug.out" || { cat "$TMP/bug.out"; die "the bug was not named"; }
grep -q -- '-> what failed: grad theta' "$TMP/bug.out" || die "the failure's detail is missing"
[ -s "$TMP/bug.dump" ] || die "the guide's --dump wrote nothing"
echo "ok: the buggy copy fails 'grad theta': $bugcheck"
replay=$(command_line 'build/framework/flowlab check --replay /tmp/walk/bug.dump')
[ -n "$replay" ] || die "no replay command in the guide"
if eval "$replay" >"$TMP/replay.out" 2>&1; then
    cat "$TMP/replay.out"
    die "the replay passed"
fi
grep -q '^  now: .*: FAIL$' "$TMP/replay.out" || { cat "$TMP/replay.out"; die "the replay did not fail"; }
echo "ok: $replay"

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
