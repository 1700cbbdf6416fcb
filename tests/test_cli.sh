#!/usr/bin/env bash
# test_cli.sh - the flowlab command: exit codes, and errors on stderr as ONE
# line naming the file (and line or key). Run by meson test, which sets
# FLOWLAB_EXE, FLOWLAB_SOURCE_ROOT and FLOWLAB_TEST_DIR.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
TEST_DIR=${FLOWLAB_TEST_DIR:?run through meson test}
unset FLOWLAB_PLUGIN_PATH # only the build tree's plugins

. "$(dirname "$0")/lib.sh"

# A small valid experiment; variants below edit one line of it.
cat >"$TMP/good.ini" <<'EOF'
[experiment]
name = cli

[data]
type = moons
test_size = 200

[flow.1]
type = affine-coupling
repeat = 2
hidden = 8

[train]
steps = 5
batch = 32
EOF
variant() { # variant FILE SED-EXPRESSION
    sed "$2" "$TMP/good.ini" >"$TMP/$1"
}

# ---- input files and values ------------------------------------------------

run run "$TMP/missing.ini"
expect_error "missing experiment file" 5 "$TMP/missing.ini"

variant syntax.ini '10s/.*/hidden 8/'
run run "$TMP/syntax.ini"
expect_error "syntax error" 3 "syntax.ini:10:" "syntax error"

variant unknown_key.ini 's/^steps = 5/stesp = 5/'
run run "$TMP/unknown_key.ini"
expect_error "unknown key" 3 "unknown_key.ini:14:" "[train]" "'stesp'" "did you mean 'steps'?"

variant bad_value.ini 's/^batch = 32/batch = lots/'
run run "$TMP/bad_value.ini"
expect_error "bad value" 3 "bad_value.ini:15:" "[train] batch = 'lots'" "expected an integer"

variant range.ini 's/^hidden = 8/hidden = 0/'
run run "$TMP/range.ini"
expect_error "value out of range" 3 "range.ini:11:" "[flow.1] hidden = '0'" "[1, "

run run "$TMP/good.ini" --set train.steps=-1
expect_error "bad --set value" 3 "--set train.steps" "[train] steps = '-1'"

run run "$TMP/good.ini" --set trainsteps=5
expect_error "malformed --set" 3 "--set trainsteps=5"

variant bad_flow.ini 's/^type = affine-coupling/type = afine-coupling/'
run run "$TMP/bad_flow.ini"
expect_error "unknown flow type" 4 "bad_flow.ini:9:" "[flow.1]" "no such flow" \
    "did you mean 'affine-coupling'?"

variant bad_data.ini 's/^type = moons/type = moonz/'
run run "$TMP/bad_data.ini"
expect_error "unknown data set" 4 "bad_data.ini:5:" "no such data set"

variant bad_section.ini 's/^\[train\]/[trian]/'
run run "$TMP/bad_section.ini"
expect_error "unknown section" 3 "bad_section.ini:13:" "did you mean [train]?"

run run "$TMP/good.ini" --set trian.steps=5
expect_error "unknown section from --set" 3 "--set trian.steps" "did you mean [train]?"

# ---- plugins -----------------------------------------------------------------

echo "not a shared object" >"$TMP/notaplugin.so"
run --plugin "$TMP/notaplugin.so" plugins
expect_error "--plugin on a text file" 4 "$TMP/notaplugin.so" "cannot load"

run --plugin "$TEST_DIR/bad_noentry.so" run "$TMP/good.ini"
expect_error "--plugin without an entry" 4 "bad_noentry.so" "no 'flowlab_plugin_entry'"

run plugins afine-coupling
expect_error "plugins with an unknown name" 4 "'afine-coupling'" "did you mean 'affine-coupling'?"

# ---- output folders --------------------------------------------------------

# /dev/null is not a directory, so nothing (not even root) can create this.
run run "$TMP/good.ini" --out /dev/null/run
expect_error "unwritable output folder" 5 "/dev/null/run"

mkdir "$TMP/taken"
echo "precious" >"$TMP/taken/notes.txt"
run run "$TMP/good.ini" --out "$TMP/taken"
expect_error "non-empty run directory" 5 "$TMP/taken" "not empty"
[ "$(cat "$TMP/taken/notes.txt")" = precious ] || fail "the existing file was changed"
[ "$(ls -A "$TMP/taken")" = notes.txt ] || fail "files were added to the existing run directory"

echo "a file" >"$TMP/plainfile"
run run "$TMP/good.ini" --out "$TMP/plainfile"
expect_error "run directory is a file" 5 "$TMP/plainfile"

run sample "$TMP/no_such_run" -n 10
expect_error "sample from a missing run" 5 "$TMP/no_such_run: No such file or directory"
mkdir -p "$TMP/not_a_run"
run sample "$TMP/not_a_run" -n 10
expect_error "sample from a directory that is not a run" 5 "$TMP/not_a_run: not a run directory (no readable config.ini"
run run "$TMP/good.ini" --set
expect_error "--set without a value" 2 "--set needs a value"

# ---- usage -------------------------------------------------------------------

run frobnicate
expect_error "unknown command" 2 "unknown command 'frobnicate'"

run --frobnicate plugins
expect_error "unknown option" 2 "'--frobnicate'"

run sample "$TMP/x" -n 0
[ "$rc" = 2 ] || fail "sample -n 0: exit code $rc, expected 2"

run
[ "$rc" = 2 ] || fail "no command: exit code $rc, expected 2"

for cmd in "" run plugins sample check; do
    # shellcheck disable=SC2086
    run $cmd --help
    [ "$rc" = 0 ] || fail "'flowlab $cmd --help': exit code $rc"
    grep -q "^usage: flowlab $cmd" "$TMP/out" || fail "'flowlab $cmd --help' prints no usage"
    [ -s "$TMP/err" ] && fail "'flowlab $cmd --help' wrote to stderr"
    echo "ok: flowlab $cmd --help"
done

# ---- check on image shapes (issue 15) ----------------------------------------

run check --flow squeeze --shape 2x4x4
expect_ok "check --flow squeeze --shape 2x4x4"
grep -q "squeeze: 1 configurations, 1 runs (0 shapes not applicable)" "$TMP/out" ||
    fail "check --shape 2x4x4 did not run squeeze on that shape only"
run check --flow split --shape 1x4x4
[ "$rc" = 1 ] || fail "check split on 1x4x4 only: exit code $rc, expected 1"
grep -q "refused every shape" "$TMP/out" || fail "check split on 1x4x4: no 'refused every shape'"
run check --flow split --shape 3x2
expect_error "check --shape 3x2" 2 "--shape expects CxHxW" "'3x2'"

# ---- listings ----------------------------------------------------------------

run plugins
[ "$rc" = 0 ] || fail "plugins: exit code $rc"
grep -q '^  moons ' "$TMP/out" || fail "'flowlab plugins' does not list moons"
grep -q '^  affine-coupling ' "$TMP/out" || fail "'flowlab plugins' does not list affine-coupling"
grep -q 'refused' "$TMP/out" && fail "'flowlab plugins' shows refused plugins"
echo "ok: flowlab plugins"
run plugins train
[ "$rc" = 0 ] || fail "plugins train: exit code $rc"
grep -q '^section \[train\]' "$TMP/out" || fail "'flowlab plugins train' does not document [train]"
grep -q '^    batch ' "$TMP/out" || fail "'flowlab plugins train' does not list the batch key"
run plugins trian
expect_error "plugins with a misspelled section" 4 "'trian'" "did you mean 'train'?"

run plugins affine-coupling
[ "$rc" = 0 ] || fail "plugins affine-coupling: exit code $rc"
grep -qE '^ +hidden +int list' "$TMP/out" || fail "'flowlab plugins affine-coupling' lacks 'hidden'"
grep -q 'relu|tanh|elu|softplus' "$TMP/out" || fail "enum choices are not listed"
echo "ok: flowlab plugins affine-coupling"

# ---- a run that works ------------------------------------------------------

run run "$TMP/good.ini" --out "$TMP/ok" --set train.steps=3
[ "$rc" = 0 ] || fail "a valid run: exit code $rc"
for f in config.ini metrics.csv checkpoint.flc result.json; do
    [ -s "$TMP/ok/$f" ] || fail "the run directory lacks $f"
done
grep -q '^steps = 3$' "$TMP/ok/config.ini" || fail "config.ini does not record the --set"
for f in "$TMP/ok"/*tmp*; do
    [ -e "$f" ] && fail "temporary file left in the run directory: $f"
done
echo "ok: a valid run"

# ---- a component's message from a worker thread ------------------------------
# fail_lik fails only off OpenMP thread 0; the decoder runs its rows on two
# threads, and the message (kept per thread by host->error) must reach the
# user all the same.

awk 'BEGIN { srand(7); print "a,b,c,d"; for (i = 0; i < 2000; i++)
             printf "%.4f,%.4f,%.4f,%.4f\n", rand(), rand(), rand(), rand() }' >"$TMP/lik.csv"
cat >"$TMP/lik.ini" <<EOF
[experiment]
task = vae
threads = 2
[data]
type = csv
path = $TMP/lik.csv
[encoder]
latent = 2
hidden = 64
[decoder]
hidden = 512,512
[likelihood]
type = fail-lik
[estimator]
type = iwae
k = 50
[train]
steps = 2
batch = 200
EOF
run --quiet --plugin "$TEST_DIR/fail_lik.so" run "$TMP/lik.ini" --out "$TMP/lik"
expect_error "a likelihood's message from a worker thread" 1 \
    "likelihood fail-lik" "refusing rows on worker thread 1 on purpose"

# ---- a context-taking posterior flow without a context: one warning --------
sed -e 's/^type = fail-lik$/type = gaussian/' -e 's/^hidden = 512,512$/hidden = 8/' \
    -e 's/^k = 50$/k = 2/' "$TMP/lik.ini" >"$TMP/noctx.ini"
printf '[posterior]\ntype = gaussian-diag\n[flow.1]\ntype = iaf\nhidden = 8\n' >>"$TMP/noctx.ini"
run --quiet run "$TMP/noctx.ini" --out "$TMP/noctx"
before=$failures
[ "$rc" = 0 ] || fail "an IAF posterior without context: exit $rc: $(cat "$TMP/err")"
grep -qF "[flow.1] iaf can use a context h from the encoder, but [encoder] context = 0" "$TMP/err" ||
    fail "an IAF posterior without context: no warning ($(cat "$TMP/err"))"
run --quiet run "$TMP/noctx.ini" --out "$TMP/ctx" --set encoder.context=4
[ "$rc" = 0 ] || fail "an IAF posterior with context: exit $rc"
grep -q "context" "$TMP/err" && fail "an IAF posterior with context = 4 still warns: $(cat "$TMP/err")"
[ "$failures" = "$before" ] && echo "ok: an IAF posterior without a context is warned about, with one it is not"

# ---- estimator settings refused at load, before any data is read ------------
# [data] names a file that does not exist: the estimator's refusal must come
# first (the vae task makes its estimator before the data set).

cat >"$TMP/est.ini" <<EOF
[experiment]
task = vae
[data]
type = csv
path = $TMP/no-such-data.csv
[encoder]
latent = 2
hidden = 8
[decoder]
hidden = 8
[likelihood]
type = gaussian
[estimator]
k = 8
[train]
steps = 2
batch = 10
EOF
est_variant() { # est_variant LINES...: est.ini with these lines after [estimator] k = 8
    local extra
    extra=$(printf '%s\\n' "$@")
    sed "s/^k = 8$/k = 8\n${extra%\\n}/" "$TMP/est.ini" >"$TMP/estv.ini"
}
est_variant "type = renyi" "alpha = 1"
run run "$TMP/estv.ini" --out "$TMP/est"
expect_error "renyi alpha = 1" 3 "estv.ini:13: [estimator] renyi: alpha = 1"
est_variant "type = miwae" "m = 3"
run run "$TMP/estv.ini" --out "$TMP/est"
expect_error "miwae m not dividing k" 3 \
    "estv.ini:13: [estimator] miwae: m = 3 does not divide [estimator] k = 8"
est_variant "type = piwae"
run run "$TMP/estv.ini" --out "$TMP/est" --set estimator.m=16
expect_error "piwae m above k" 3 \
    "estv.ini:13: [estimator] piwae: m = 16 does not divide [estimator] k = 8"
est_variant "type = ciwae" "beta = 1.5"
run run "$TMP/estv.ini" --out "$TMP/est"
expect_error "ciwae beta outside [0, 1]" 3 "estv.ini:16: [estimator] beta = '1.5'" "[0, 1]"
est_variant "type = renyi" "alpha = nan"
run run "$TMP/estv.ini" --out "$TMP/est"
expect_error "renyi alpha not finite" 3 "estv.ini:16: [estimator] alpha = 'nan'" "finite"
[ -e "$TMP/est" ] && fail "a refused estimator left a run directory"

# ... and each of the new estimators trains a small VAE end to end
awk 'BEGIN { srand(3); print "a,b,c"; for (i = 0; i < 200; i++)
             printf "%.4f,%.4f,%.4f\n", rand(), rand(), rand() }' >"$TMP/est.csv"
sed -i "s|^path = .*|path = $TMP/est.csv|" "$TMP/est.ini"
n=0
for e in "renyi --set estimator.alpha=0.5" "vr-max" "miwae --set estimator.m=2" \
    "ciwae --set estimator.beta=0.25" "piwae --set estimator.m=4" "miwae"; do
    n=$((n + 1))
    # shellcheck disable=SC2086
    run --quiet run "$TMP/est.ini" --out "$TMP/est$n" --set estimator.type=$e
    expect_ok "a vae trained with estimator $e"
done

# gradvar tries every estimator on a run whose [estimator] holds another
# type's key (est1 is renyi with alpha); piwae's inference gradient is
# miwae's (same m), so their inference SNRs agree.
run --quiet gradvar "$TMP/est1" --estimators elbo,iwae,renyi,vr-max,miwae,ciwae,piwae \
    --k 1,4 --draws 4 --n 5
expect_ok "gradvar compares the new estimators"
grep -q "n/a" "$TMP/out" && fail "gradvar refused an estimator: $(grep n/a "$TMP/out" | head -1)"
[ "$(awk 'NF == 0 { exit } 1' "$TMP/out" |
    grep -cE '^(elbo|iwae|renyi|vr-max|miwae|ciwae|piwae) +[14] ')" = 14 ] ||
    fail "gradvar did not list 7 estimators x 2 k: $(cat "$TMP/out")"
snr_inf() { awk -v e="$1" '$1 == e && $2 == 4 { print $6; exit }' "$TMP/out"; } # first table
[ -n "$(snr_inf piwae)" ] && [ "$(snr_inf piwae)" = "$(snr_inf miwae)" ] ||
    fail "piwae's inference SNR $(snr_inf piwae) is not miwae's $(snr_inf miwae)"

finish CLI
