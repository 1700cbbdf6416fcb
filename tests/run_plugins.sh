#!/usr/bin/env bash
# run_plugins.sh - a run directory remembers its plugins (provenance.json:
# path and sha256): sample, plot and --resume reload an out-of-tree plugin
# the run used without --plugin, warn when its file changed, and name it
# when it is gone.
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
real_flag=
if [ "${FLOWLAB_REAL:-float}" = double ]; then real_flag=-DFL_REAL_DOUBLE; fi
cd "$TMP"
mkdir lib
cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden $real_flag -I "$SRC/include" \
    "$SRC/tests/plugins/good_flow.c" -o lib/shift.so
cat >shift.ini <<'EOF2'
[experiment]
name = shift
seed = 2
[data]
type = moons
test_size = 500
[flow.1]
type = affine-coupling
repeat = 2
hidden = 8
[flow.2]
type = shift
[train]
steps = 40
batch = 64
eval_every = 20
checkpoint_every = 20
EOF2
"$EXE" --quiet run shift.ini --plugin lib/shift.so --out run >log 2>&1 || { cat log; die "run with --plugin"; }
hash=$(sha256sum lib/shift.so | cut -c1-64)
grep -q "\"path\": \"$TMP/lib/shift.so\", \"sha256\": \"$hash\"" run/provenance.json ||
    die "provenance.json lacks the plugin's path and sha256: $(grep shift run/provenance.json)"
echo "ok: provenance.json records the plugin's path and sha256"

"$EXE" sample run -n 5 -o s.csv 2>err || { cat err; die "sample without --plugin"; }
[ "$(wc -l <s.csv)" -eq 6 ] || die "sample wrote $(wc -l <s.csv) lines"
grep -q "reloaded the run's plugin test-shift from $TMP/lib/shift.so" err || die "no reload line: $(cat err)"
"$EXE" --quiet plot run 2>err || { cat err; die "plot without --plugin"; }
# resume (a copy without result.json continues from its checkpoint)
cp -r run part && rm part/result.json
"$EXE" --quiet run shift.ini --out part --resume --set train.steps=60 >log 2>&1 ||
    { cat log; die "--resume without --plugin"; }
[ -f part/result.json ] || die "the resumed run did not finish"
grep -q '"name": "test-shift"' part/provenance.json || die "the resumed run's provenance lacks the plugin"
echo "ok: sample, plot and --resume reload the run's plugin without --plugin"

# a changed plugin: a warning naming it
printf 'x' >>lib/shift.so
"$EXE" sample run -n 5 -o s2.csv 2>err || { cat err; die "sample with a changed plugin"; }
grep -q "warning: .*plugin test-shift has changed since the run" err || die "no warning for a changed plugin: $(cat err)"
echo "ok: a changed plugin is reloaded with a warning"

# a plugin that is gone: named, exit 4
rm lib/shift.so
set +e
"$EXE" sample run -n 5 -o s3.csv 2>err
rc=$?
set -e
[ "$rc" -eq 4 ] || die "sample with the plugin gone: exit $rc: $(cat err)"
grep -q "no such flow" err || die "gone: $(cat err)"
grep -q "the run used plugin test-shift ($TMP/lib/shift.so), which is gone" err || die "gone: $(cat err)"
[ -e s3.csv ] && die "samples written without the plugin"
echo "ok: a gone plugin is named (exit 4)"
