#!/usr/bin/env bash
# test_kitdbg.sh - issue 16 items 4-5: `flowlab new-layer` writes a layer
# that builds with the command it prints and passes the check it prints
# (both kinds); `check --set` checks non-default key values and names a
# bad key; a failed check prints what it compared, `--dump` writes it and
# `--replay` re-runs it to the same failure (and passes once the layer is
# fixed). Run by meson test.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
TEST_DIR=${FLOWLAB_TEST_DIR:?run through meson test}
unset FLOWLAB_PLUGIN_PATH

. "$(dirname "$0")/lib.sh"

# ---- new-layer --------------------------------------------------------------

# The command printed on the line after `label` in the last run's output.
printed() {
    awk -v l="$1" '$0 == l { getline; sub(/^  /, ""); print; exit }' "$TMP/out"
}

for kind in graph hand; do
    run new-layer "my_${kind}_layer" --dir "$TMP" --kind "$kind"
    expect_ok "new-layer --kind $kind"
    [ -f "$TMP/my_${kind}_layer.c" ] || fail "new-layer --kind $kind wrote no file"
    build=$(printed "build it:")
    check=$(printed "check it:")
    case "$build" in cc\ *"$TMP/my_${kind}_layer.so"*) ;; *) fail "no build command: '$build'" ;; esac
    if eval "$build" >"$TMP/cc.out" 2>&1; then
        echo "ok: the printed build command builds the $kind layer"
    else
        fail "the printed build command failed: $build: $(head -c 600 "$TMP/cc.out")"
        continue
    fi
    if eval "$check" >"$TMP/check.out" 2>&1 && grep -q ' 0 failed$' "$TMP/check.out" &&
        grep -q "^my-${kind}-layer: " "$TMP/check.out"; then
        echo "ok: the $kind layer passes the printed check"
    else
        fail "the $kind layer fails its check: $check: $(tail -c 1500 "$TMP/check.out")"
    fi
done
grep -q 'fl_ex_compile' "$TMP/my_graph_layer.c" || fail "the graph layer does not use graphs"
grep -q 'backward' "$TMP/my_graph_layer.c" && fail "the graph layer has a hand-written backward"
grep -q 'static fl_status backward' "$TMP/my_hand_layer.c" || fail "the hand layer has no backward"

run new-layer my_graph_layer --dir "$TMP"
expect_error "new-layer refuses an existing file" 2 "my_graph_layer.c" "already exists"
for bad in 2fast my-layer "a b" 'x$y'; do
    run new-layer "$bad" --dir "$TMP"
    expect_error "new-layer refuses the name '$bad'" 2 "'$bad'" "not a C identifier"
done
run new-layer fine --dir "$TMP" --kind magic
expect_error "new-layer refuses --kind magic" 2 "--kind 'magic'"
run new-layer fine --dir "$TMP/nowhere"
expect_error "new-layer refuses a missing --dir" 5 "$TMP/nowhere"
[ ! -e "$TMP/fine.c" ] || fail "a refused new-layer wrote a file"

# ---- check --set --------------------------------------------------------------

# An existing layer, affine-coupling, with a non-default width: the kit
# builds the layer with it (fewer parameters than the default 64,64).
COUPLING=$(grep -l 'affine-coupling' "$FLOWLAB_TEST_BUILD_ROOT"/plugins/*.so | head -1)
[ -n "$COUPLING" ] || fail "no plugin file holds affine-coupling"
params() { sed -n 's/^affine-coupling  dim 2  context 0 .*parameters \([0-9]*\)$/\1/p' "$TMP/out" | head -1; }
run check --plugin "$COUPLING" --flow affine-coupling --dim 2 --rows 4 --verbose
expect_ok "check affine-coupling with its defaults"
p_default=$(params)
run check --plugin "$COUPLING" --flow affine-coupling --dim 2 --rows 4 --verbose --set hidden=3
expect_ok "check --plugin --set hidden=3"
p_set=$(params)
grep -q ' 0 failed$' "$TMP/out" || fail "check --set hidden=3 reported failures"
if [ -n "$p_default" ] && [ -n "$p_set" ] && [ "$p_set" -lt "$p_default" ]; then
    echo "ok: --set hidden=3 checks a smaller layer ($p_set parameters, default $p_default)"
else
    fail "--set hidden=3 did not change the layer checked ('$p_set' vs '$p_default' parameters)"
fi
run check --plugin "$COUPLING" --flow affine-coupling --set hiden=3
expect_error "check --set names an unknown key" 3 "--set hiden" "no key 'hiden'" \
    "did you mean 'hidden'?"
run check --plugin "$COUPLING" --flow affine-coupling --set hidden=wide
expect_error "check --set names the key of a bad value" 3 "--set hidden" "'wide'"
run check --plugin "$COUPLING" --flow affine-coupling --set hidden
expect_error "check --set without a value" 3 "--set 'hidden'" "KEY=VALUE"

# ---- a failed check: what it compared, --dump, --replay ---------------------

# The layer new-layer wrote by hand, with the dlogdet term of da dropped
# (docs/writing-a-layer.md's bug): grad theta fails.
sed -e 's/ + p->dlogdet\[r\]//' -e 's/my-hand-layer/bug-layer/' "$TMP/my_hand_layer.c" >"$TMP/bug.c"
cmp -s "$TMP/bug.c" "$TMP/my_hand_layer.c" && fail "the bug was not put in"
bugbuild=$(echo "$build" | sed -e "s#my_hand_layer#bug#g")
eval "$bugbuild" || fail "building the broken layer failed"
run check --plugin "$TMP/bug.so" --dim 2 --dump "$TMP/bug.dump"
[ "$rc" = 1 ] || fail "check of the broken layer exited $rc, expected 1"
grep -q -- '-> what failed: grad theta, ' "$TMP/out" || fail "no comparison printed: $(cat "$TMP/out")"
grep -q '^       row [0-9]* of x: \[' "$TMP/out" || fail "no offending row printed"
grep -q '^       backward: <gradient, direction> = ' "$TMP/out" || fail "no backward number"
grep -q '^       finite difference of L along it = ' "$TMP/out" || fail "no finite difference"
grep -q '^       error .*, tolerance ' "$TMP/out" || fail "no error beside its tolerance"
grep -q '^       flow\.a = \[' "$TMP/out" || fail "no parameter values: $(cat "$TMP/out")"
grep -q "^  -> wrote it to $TMP/bug.dump" "$TMP/out" || fail "the dump was not announced"
sed -n '/-> what failed/,/^$/p' "$TMP/out" | grep -v -e '^$' -e '-> wrote it' >"$TMP/first.txt"
grep -q '^check grad-theta$' "$TMP/bug.dump" || fail "the dump does not name grad theta"
grep -q "^plugin $TMP/bug.so$" "$TMP/bug.dump" || fail "the dump does not name the plugin"
[ "$(grep -c '^x ' "$TMP/bug.dump")" = 8 ] || fail "the dump lacks the 8 input rows"
echo "ok: the failed check printed what it compared and dumped it"

run check --replay "$TMP/bug.dump"
[ "$rc" = 1 ] || fail "replay of the broken layer exited $rc, expected 1: $(cat "$TMP/err")"
dumped=$(sed -n 's/^  dumped: error \([^,]*\),.*/\1/p' "$TMP/out")
now=$(sed -n 's/^  now:    error \([^,]*\),.*: FAIL$/\1/p' "$TMP/out")
[ -n "$dumped" ] && [ "$dumped" = "$now" ] || fail "replay measured '$now', the dump '$dumped'"
sed -n '/-> what failed/,$p' "$TMP/out" >"$TMP/again.txt"
if diff "$TMP/first.txt" "$TMP/again.txt" >"$TMP/diff.txt"; then
    echo "ok: the replay reproduces the failure exactly (error $now)"
else
    fail "the replay differs from the failure: $(cat "$TMP/diff.txt")"
fi

# Fixed in place (the same plugin path): the same replay now passes.
cp "$TMP/bug.so" "$TMP/bug.broken.so"
sed -e 's/my-hand-layer/bug-layer/' "$TMP/my_hand_layer.c" >"$TMP/bug.c"
eval "$bugbuild" || fail "building the fixed layer failed"
run check --replay "$TMP/bug.dump"
if [ "$rc" = 0 ] && grep -q '^  now: .*: ok$' "$TMP/out"; then
    echo "ok: the replay passes once the layer is fixed"
else
    fail "replay of the fixed layer: exit $rc: $(cat "$TMP/out")"
fi

# A logdet with the wrong sign (tests/plugins/broken.c): the inverse's
# logdet no longer cancels it, the first check to see it; the offending row
# and both numbers.
run check --plugin "$TEST_DIR/broken_logdet_sign.so" --dim 3 --dump "$TMP/ld.dump"
[ "$rc" = 1 ] || fail "check of broken_logdet_sign exited $rc"
grep -q -- '-> what failed: inverse, max |logdet_fwd + logdet_inv| (' "$TMP/out" ||
    fail "logdet sign: not the inverse's logdet check: $(cat "$TMP/out")"
grep -q '^       logdet of forward = ' "$TMP/out" || fail "logdet sign: the forward's number missing"
grep -q '^       -(logdet of inverse) = ' "$TMP/out" || fail "logdet sign: the inverse's missing"
grep -q '^       row [0-9] of x: \[' "$TMP/out" || fail "logdet sign: no offending row"
run check --replay "$TMP/ld.dump"
if [ "$rc" = 1 ] && grep -q '^check inverse-logdet$' "$TMP/ld.dump"; then
    echo "ok: a logdet of the wrong sign dumps and replays to its failure"
else
    fail "the logdet dump did not replay to a failure: $rc $(cat "$TMP/out" "$TMP/err")"
fi

# Dumps that are not right: one line naming the file and line.
sed 's/^rows 8$/rows many/' "$TMP/bug.dump" >"$TMP/bad.dump"
run check --replay "$TMP/bad.dump"
expect_error "replay names a bad dump line" 3 "bad.dump:" "expected a whole number"
grep -v '^rl ' "$TMP/bug.dump" >"$TMP/short.dump"
run check --replay "$TMP/short.dump"
expect_error "replay names a missing part" 3 "short.dump" "no 'rl' line"
grep -v '^x 3 ' "$TMP/bug.dump" >"$TMP/norow.dump"
run check --replay "$TMP/norow.dump"
expect_error "replay names a missing row" 3 "norow.dump" "7 'x'" "for 8 rows"
run check --replay "$TMP/bug.dump" --dim 3
expect_error "replay takes no shape options" 2 "--replay FILE takes only --plugin"

finish "kit debugger"
