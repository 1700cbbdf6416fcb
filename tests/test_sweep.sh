#!/usr/bin/env bash
# test_sweep.sh - `flowlab sweep` and `flowlab report` on tiny density
# sweeps (tests/data/sweep_*.ini): the dry-run listing with zip and exclude,
# a 2 x 2 x 2-seed sweep and its report (rows, seed counts, means equal to
# the cells' result.json), a rerun that recomputes nothing, a failing cell,
# and errors. With the argument `mpi`: the same sweep under
# `mpirun --oversubscribe -n 3` gives the same report.csv (exit 77, skipped,
# without mpirun or an MPI build). Run by meson test, which sets FLOWLAB_EXE,
# FLOWLAB_SOURCE_ROOT and FLOWLAB_MPI.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
DATA=$SRC/tests/data
unset FLOWLAB_PLUGIN_PATH # only the build tree's plugins

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

run() { # flowlab ARGS..., keeping stdout, stderr and the exit code
    "$EXE" "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
}

# The value of COLUMN in the report.csv row whose group columns are KEY=V...
#   csv_value FILE COLUMN KEY=V ...
csv_value() {
    local file=$1 col=$2
    shift 2
    awk -F, -v col="$col" -v conds="$*" '
        NR == 1 { for (i = 1; i <= NF; i++) idx[$i] = i; next }
        {
            n = split(conds, c, " "); ok = 1
            for (k = 1; k <= n; k++) {
                split(c[k], kv, "=")
                if ($(idx[kv[1]]) != kv[2]) ok = 0
            }
            if (ok) print $(idx[col])
        }' "$file"
}

# A number from a flat JSON file: json_num FILE KEY
json_num() {
    sed -n "s/^ *\"$2\": *\([-0-9.eE+]*\).*/\1/p" "$1"
}

# report.csv without the columns that measure time, which no two runs share.
untimed() {
    awk -F, '
        NR == 1 { for (i = 1; i <= NF; i++) keep[i] = $i !~ /^(train_seconds|steps_per_second)_/ }
        { line = ""; for (i = 1; i <= NF; i++) if (keep[i]) line = line (line == "" ? "" : ",") $i; print line }' "$1"
}

SETS=(--set train.steps=20 --threads 1)

# ---- MPI: the same report from 3 ranks ---------------------------------------

if [ "${1:-}" = mpi ]; then
    . "$SRC/tests/mpi.sh"
    need_mpi
    run sweep "$DATA/sweep_small.ini" --out single "${SETS[@]}"
    [ "$rc" = 0 ] || fail "single-process sweep: exit code $rc: $(tail -3 "$TMP/err")"
    # Sanitizer builds: Open MPI leaks from MPI_Init in components it has
    # unloaded by exit, which no suppression can name, so leak checking is
    # off under mpirun (the single-process sweep above keeps it on).
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
    mpirun --oversubscribe -n 3 "$EXE" sweep "$DATA/sweep_small.ini" --out ranks "${SETS[@]}" \
        --oversubscribe >"$TMP/mpi.out" 2>"$TMP/mpi.err"
    rc=$?
    [ "$rc" = 0 ] || fail "mpirun -n 3 sweep: exit code $rc: $(tail -5 "$TMP/mpi.err")"
    [ "$(grep -c 'done in' "$TMP/mpi.err")" = 8 ] || fail "rank 0 did not record 8 cells"
    if [ -s ranks/report.csv ] && [ -s single/report.csv ]; then
        if diff <(untimed single/report.csv) <(untimed ranks/report.csv) >"$TMP/diff"; then
            echo "ok: mpirun -n 3 gives the single-process report.csv ($(wc -l <ranks/report.csv) lines)"
        else
            fail "report.csv differs under MPI: $(cat "$TMP/diff")"
        fi
    else
        fail "a report.csv is missing"
    fi
    # the MPI run recomputes nothing on a rerun either
    mpirun --oversubscribe -n 2 "$EXE" sweep "$DATA/sweep_small.ini" --out ranks "${SETS[@]}" \
        --oversubscribe >"$TMP/mpi.out" 2>"$TMP/mpi.err"
    [ "$(grep -c 'finished earlier' "$TMP/mpi.err")" = 8 ] || fail "MPI rerun recomputed cells"
    [ "$failures" = 0 ] || exit 1
    echo "all MPI sweep checks passed"
    exit 0
fi

# ---- dry run: zip and exclude ------------------------------------------------

run sweep "$DATA/sweep_zip.ini" --dry-run --out zip --threads 1
[ "$rc" = 0 ] || fail "dry run: exit code $rc: $(cat "$TMP/err")"
grep -q "7 cells (5 excluded)" "$TMP/out" || fail "dry run: expected 7 cells, 5 excluded: $(head -1 "$TMP/out")"
want="flow.1.repeat=1,flow.1.hidden=8,train.lr=1e-3,experiment.seed=1
flow.1.repeat=1,flow.1.hidden=8,train.lr=3e-3,experiment.seed=1
flow.1.repeat=2,flow.1.hidden=16-16,train.lr=1e-3,experiment.seed=2
flow.1.repeat=2,flow.1.hidden=16-16,train.lr=3e-3,experiment.seed=1
flow.1.repeat=2,flow.1.hidden=16-16,train.lr=3e-3,experiment.seed=2
flow.1.repeat=4,flow.1.hidden=32-32,train.lr=1e-3,experiment.seed=1
flow.1.repeat=4,flow.1.hidden=32-32,train.lr=1e-3,experiment.seed=2"
got=$(awk 'NR > 2 { print $NF }' "$TMP/out")
[ "$got" = "$want" ] || fail "dry run cells:
$got
expected:
$want"
grep -qE '^ +3 +2 +16,16 +1e-3 +2 +new ' "$TMP/out" || fail "dry run: the table lacks cell 3's values"
[ -e zip ] && fail "dry run created the sweep directory"
echo "ok: dry run lists the cells of a zip with exclude rules"

# ---- a 2 x 2 x 2-seed sweep ------------------------------------------------------

run sweep "$DATA/sweep_small.ini" --out small "${SETS[@]}"
[ "$rc" = 0 ] || fail "sweep: exit code $rc: $(tail -3 "$TMP/err")"
cells=(small/flow.1.repeat=*)
[ "${#cells[@]}" = 8 ] || fail "expected 8 cell directories, found ${#cells[@]}"
for c in "${cells[@]}"; do
    for f in config.ini metrics.csv checkpoint.flc result.json provenance.json log.txt; do
        [ -s "$c/$f" ] || fail "$c lacks $f"
    done
    grep -q '^steps = 20$' "$c/config.ini" || fail "$c: the --set did not reach the cell"
    grep -q '"exit_status": 0' "$c/provenance.json" || fail "$c: provenance.json lacks the exit status"
done
grep -q '^lr = 3e-3$' "small/flow.1.repeat=2,train.lr=3e-3,experiment.seed=2/config.ini" ||
    fail "the cell's train.lr is not in its config.ini"
for f in report.md report.csv report.html cells.csv sweep.ini base.ini; do
    [ -s "small/$f" ] || fail "the sweep directory lacks $f"
done
[ "$(wc -l <small/report.csv)" = 5 ] || fail "report.csv: expected a header and 4 rows"
head -1 small/report.csv | grep -q '^rank,best,flow.1.repeat,train.lr,n,failed,test_nll_mean,test_nll_se,' ||
    fail "report.csv header: $(head -1 small/report.csv)"
[ "$(awk -F, 'NR > 1 && $5 == 2' small/report.csv | wc -l)" = 4 ] || fail "every row should average 2 seeds"
[ "$(awk -F, 'NR > 1 { print $2 }' small/report.csv | tr -d '\n')" = 1000 ] || fail "the first row should be marked best"
# sorted by test_nll, lowest first
sort -t, -k7,7g -c <(tail -n +2 small/report.csv) 2>/dev/null || fail "report.csv is not sorted by test_nll"
# each mean is the mean of the two cells' result.json
for rep in 1 2; do
    for lr in 1e-3 3e-3; do
        a=$(json_num "small/flow.1.repeat=$rep,train.lr=$lr,experiment.seed=1/result.json" test_nll)
        b=$(json_num "small/flow.1.repeat=$rep,train.lr=$lr,experiment.seed=2/result.json" test_nll)
        m=$(csv_value small/report.csv test_nll_mean flow.1.repeat=$rep train.lr=$lr)
        awk -v a="$a" -v b="$b" -v m="$m" 'BEGIN { d = (a + b) / 2 - m; exit !(m != "" && d < 1e-6 && d > -1e-6) }' ||
            fail "repeat=$rep lr=$lr: report mean '$m', cells $a and $b"
    done
done
grep -q '^| 1 (best) | ' small/report.md || fail "report.md does not mark the best row"
grep -q 'Each row averages over `experiment.seed`' small/report.md || fail "report.md does not say what is averaged"
[ "$(grep -c 'src="data:image/png;base64,iVBORw0KGgo' small/report.html)" = 1 ] ||
    fail "report.html should embed 1 PNG chart overlaying the 4 rows"
[ "$(grep -c 'class="legend-entry"' small/report_curves/chart-1.svg)" = 4 ] ||
    fail "the chart's legend should name the 4 rows"
grep -q 'href="flow.1.repeat=1,train.lr=1e-3,experiment.seed=1/curves.png"' small/report.html ||
    fail "report.html does not link the cells' pictures"
grep -q 'Options given to every cell (flowlab sweep --set): `' small/report.md ||
    fail "report.md does not list the sweep's --set options"
grep -q '<link\|<script' small/report.html && fail "report.html is not self-contained"
[ "$(grep -c ',done,0,' small/cells.csv)" = 8 ] || fail "cells.csv: expected 8 done cells"
grep -q '"git_revision": ' "${cells[0]}/provenance.json" || fail "provenance.json lacks the revision"
grep -q '"name": "datasets-toy2d"' "${cells[0]}/provenance.json" || fail "provenance.json lacks the plugins"
[ -e small/logs ] && fail "small/logs should be gone once every log moved into its cell"
echo "ok: a 2 x 2 x 2-seed sweep and its report"

# the report's options from the command line: a pivot, chosen columns, errors
run report small --pivot train.lr flow.1.repeat test_nll --columns test_nll,train_nll
[ "$rc" = 0 ] || fail "report --pivot: exit code $rc: $(cat "$TMP/err")"
head -1 small/report_pivot.csv | grep -q '^train.lr,flow.1.repeat=1_mean,flow.1.repeat=1_se,flow.1.repeat=1_n,' ||
    fail "report_pivot.csv header: $(head -1 small/report_pivot.csv)"
grep -q '^| train.lr \\ flow.1.repeat | 1 | 2 |$' "$TMP/out" || fail "the pivot table is not printed: $(cat "$TMP/out")"
grep -q '^| rank | flow.1.repeat | train.lr | n | failed | test_nll | train_nll |$' "$TMP/out" ||
    fail "--columns: $(head -3 "$TMP/out")"
[ -s small/report_curves/pivot.svg ] || fail "no pivot chart"
run report small --pivot train.lr nokey test_nll
[ "$rc" = 2 ] && grep -q "nokey' is not a swept key" "$TMP/err" || fail "a bad --pivot key: exit $rc"
run report small --columns test_nll --all-columns
[ "$rc" = 2 ] || fail "--columns with --all-columns: exit $rc"
run report small --columns nope
[ "$rc" = 3 ] && grep -q "fields: test_nll" "$TMP/err" || fail "an unknown column: exit $rc $(cat "$TMP/err")"
echo "ok: report --pivot, --columns and their errors"

# ---- rerun: finished cells are not recomputed -------------------------------

touch -d '2001-01-01' small/*/result.json small/*/log.txt
run sweep "$DATA/sweep_small.ini" --out small "${SETS[@]}"
[ "$rc" = 0 ] || fail "rerun: exit code $rc"
[ "$(grep -c 'finished earlier' "$TMP/err")" = 8 ] || fail "rerun: not every cell was skipped: $(cat "$TMP/err")"
[ -z "$(find small -name result.json -newermt '2002-01-01')" ] || fail "rerun rewrote a result.json"
[ -z "$(find small -name log.txt -newermt '2002-01-01')" ] || fail "rerun rewrote a log"
echo "ok: a rerun recomputes nothing"

# an unfinished cell (a checkpoint but no result.json) is resumed from its
# checkpoint, in place
victim="small/flow.1.repeat=1,train.lr=1e-3,experiment.seed=2"
rm "$victim/result.json"
echo junk >"$victim/stale.txt"
run sweep "$DATA/sweep_small.ini" --out small "${SETS[@]}"
[ "$rc" = 0 ] || fail "rerun of an unfinished cell: exit code $rc"
[ "$(grep -c 'finished earlier' "$TMP/err")" = 7 ] || fail "expected 7 cells skipped"
[ -s "$victim/result.json" ] || fail "the unfinished cell was not rerun"
[ -e "$victim/stale.txt" ] || fail "the resumed cell's directory was not kept"
grep -q "resuming" "$victim/log.txt" || fail "the unfinished cell was not resumed: $(cat "$victim/log.txt")"
# a changed config reruns the cell and keeps the old run aside
run sweep "$DATA/sweep_small.ini" --out small --set train.steps=10 --threads 1 --set train.eval_every=5
[ "$(grep -c 'done in' "$TMP/err")" = 8 ] || fail "a changed config should rerun every cell"
[ "$(ls small/superseded | wc -l)" = 8 ] || fail "the superseded runs should be kept in small/superseded"
grep -q '^steps = 10$' "$victim/config.ini" || fail "the rerun cell does not have the new config"
echo "ok: unfinished cells rerun, changed cells superseded"

# an unfinished cell whose checkpoint belongs to another experiment now:
# `run --resume` would refuse it (exit 3) on every rerun, so the sweep
# moves the old run aside whole (DIR/superseded) and starts the cell afresh
rm "$victim/result.json"
old_files=$(cd "$victim" && for f in $(ls | sort); do echo "$f $(cksum <"$f")"; done)
run sweep "$DATA/sweep_small.ini" --out small --set train.steps=10 --threads 1 \
    --set train.eval_every=5 --set train.batch=16 --set experiment.threads=1
[ "$rc" = 0 ] || fail "a changed unfinished cell: exit code $rc: $(cat "$TMP/err")"
[ "$(grep -c 'done in' "$TMP/err")" = 8 ] || fail "a changed unfinished cell: expected 8 cells run"
why="${victim#small/}: unfinished, and its checkpoint cannot be resumed by the cell's experiment now"
[ "$(grep -cF "$why" "$TMP/err")" = 1 ] || fail "no line says why the unfinished cell starts afresh: $(cat "$TMP/err")"
grep -F "$why" "$TMP/err" | grep -qF "[train] batch = 32 in the run, 16 in this experiment" ||
    fail "the line does not name the differing key: $(grep -F "$why" "$TMP/err")"
kept=$(grep -F "$why" "$TMP/err" | sed -n 's/.*old run kept in \(.*\))$/\1/p')
[ -n "$kept" ] && [ -d "$kept" ] || fail "the old unfinished run was not kept ('$kept')"
[ -n "$kept" ] && [ "$(cd "$kept" && for f in $(ls | sort); do echo "$f $(cksum <"$f")"; done)" = "$old_files" ] ||
    fail "the kept unfinished run is not byte-identical to what it was"
grep -q "resuming" "$victim/log.txt" && fail "the changed unfinished cell was resumed"
grep -q '^batch = 16$' "$victim/config.ini" && [ -s "$victim/result.json" ] ||
    fail "the restarted cell does not have the new config and a result"
grep -q ',failed,' small/cells.csv && fail "cells.csv records a failure"
echo "ok: an unfinished cell of a changed experiment starts afresh, the old run kept"

# `flowlab report` on demand, with options
run report small --metric train_nll --direction max --group-by flow.1.repeat
[ "$rc" = 0 ] || fail "report: exit code $rc: $(cat "$TMP/err")"
[ "$(wc -l <small/report.csv)" = 3 ] || fail "report --group-by flow.1.repeat: expected 2 rows"
[ "$(awk -F, 'NR > 1 { print $4 }' small/report.csv | tr -d '\n')" = 44 ] || fail "each row should average 4 cells"
head -1 small/report.csv | grep -q '^rank,best,flow.1.repeat,n,failed,' || fail "group-by header"
sort -t, -k12,12gr -c <(tail -n +2 small/report.csv) 2>/dev/null || fail "not sorted by train_nll descending"
echo "ok: flowlab report --metric --direction --group-by"

# ---- a failing cell ----------------------------------------------------------------

run sweep "$DATA/sweep_fail.ini" --out failing --threads 1
[ "$rc" = 1 ] || fail "a sweep with a failing cell: exit code $rc, expected 1"
bad="failing/train.lr=10,experiment.seed=1"
[ -s "$bad/failed.txt" ] || fail "the failing cell has no failed.txt"
grep -q '^exit status 1$' "$bad/failed.txt" || fail "failed.txt: $(cat "$bad/failed.txt")"
# the step, and the layer when a flow produced the first non-finite value
grep -Eq "the training loss (is not finite|diverged)|non-finite [a-z]+ at step [0-9]+" "$bad/failed.txt" ||
    fail "failed.txt lacks the error line"
[ -s "$bad/log.txt" ] || fail "the failing cell has no log.txt"
for ok in "failing/train.lr=1e-3,experiment.seed=1" "failing/train.lr=1e-3,experiment.seed=2"; do
    [ -s "$ok/result.json" ] || fail "$ok did not finish"
done
grep -Eq '^3,"train.lr=10,experiment.seed=1",10,1,failed,1,[0-9.]*,"?(step [0-9]*: the training loss|\[flow[.0-9]*\] [a-z-]*: non-finite [a-z]* at step [0-9]*)' failing/cells.csv ||
    fail "cells.csv does not record the failure: $(cat failing/cells.csv)"
grep -q '## Failed cells' failing/report.md || fail "report.md does not list the failed cell"
[ "$(csv_value failing/report.csv failed train.lr=10)" = 1 ] || fail "report.csv: failed count"
echo "ok: a failing cell is recorded and the others finish"

# ---- errors ------------------------------------------------------------------

printf '[train]\nsteps = 1\n[sweep]\ntrain.lr = 1e-3\nzip = train.lr train.batch\n' >"$TMP/bad.ini"
run sweep "$TMP/bad.ini" --dry-run
[ "$rc" = 3 ] || fail "bad [sweep]: exit code $rc, expected 3"
[ "$(wc -l <"$TMP/err")" = 1 ] || fail "bad [sweep]: expected one line on stderr: $(cat "$TMP/err")"
grep -qF "bad.ini:5: [sweep] zip: 'train.batch' is not a swept key" "$TMP/err" || fail "bad [sweep]: $(cat "$TMP/err")"

# swept keys and values are checked before any cell runs (--dry-run too),
# with messages that name the sweep file's line and the key
sed 's/^experiment.seed = 1, 2$/trian.batch = 16, 32/' "$DATA/sweep_small.ini" >"$TMP/typo.ini"
run sweep "$TMP/typo.ini" --dry-run --out typo --threads 1
[ "$rc" = 3 ] || fail "misspelled swept key: exit code $rc, expected 3"
grep -qF "typo.ini:24: unknown section [trian]; did you mean [train]?" "$TMP/err" ||
    fail "misspelled swept key: $(cat "$TMP/err")"
grep -qF "trian.batch=16" "$TMP/err" || fail "misspelled swept key: the key is not named: $(cat "$TMP/err")"
[ -s "$TMP/out" ] && fail "misspelled swept key: the cells were listed: $(cat "$TMP/out")"
sed 's/^train.lr = 1e-3, 3e-3$/train.lr = 1e-3, abc/' "$DATA/sweep_small.ini" >"$TMP/value.ini"
run sweep "$TMP/value.ini" --out value --threads 1
[ "$rc" = 3 ] || fail "bad swept value: exit code $rc, expected 3"
grep -qF "value.ini:23: [train] lr = 'abc': expected a finite number" "$TMP/err" ||
    fail "bad swept value: $(cat "$TMP/err")"
grep -qF "train.lr=abc" "$TMP/err" || fail "bad swept value: the key is not named: $(cat "$TMP/err")"
[ -e value ] && fail "bad swept value: the sweep started"
printf '%s\n' '[experiment]' '[data]' 'type = moons' '[flow.1]' 'type = affine-coupling' \
    '[sweep]' 'flow.1.hidden = 8, 0' 'experiment.seed = 1, 2' >"$TMP/range.ini"
run sweep "$TMP/range.ini" --dry-run --out range --threads 1
[ "$rc" = 3 ] || fail "out-of-range swept value: exit code $rc, expected 3"
grep -qF "range.ini:7: [flow.1] hidden = '0': expected comma-separated integers" "$TMP/err" ||
    fail "out-of-range swept value: $(cat "$TMP/err")"

run run "$DATA/sweep_small.ini"
[ "$rc" = 3 ] || fail "flowlab run on a sweep file: exit code $rc, expected 3"
grep -qF "sweep_small.ini:21: [sweep]: this file describes a sweep; run its cells with \`flowlab sweep" "$TMP/err" ||
    fail "flowlab run on a sweep file: $(cat "$TMP/err")"

run sweep "$DATA/sweep_small.ini" --dry-run --jobs 4096 --threads 4096
[ "$rc" = 2 ] || fail "--jobs x --threads above the cores: exit code $rc, expected 2"
grep -q 'oversubscribe' "$TMP/err" || fail "the refusal should mention --oversubscribe"
run sweep "$DATA/sweep_small.ini" --dry-run --jobs 4096 --threads 4096 --oversubscribe
[ "$rc" = 0 ] || fail "--oversubscribe: exit code $rc"

run sweep "$DATA/sweep_small.ini" --dry-run --set train.lr=0.1
[ "$rc" = 3 ] || fail "--set of a swept key: exit code $rc, expected 3"
grep -qF "train.lr is swept (" "$TMP/err" || fail "--set of a swept key: $(cat "$TMP/err")"

run run "$DATA/sweep_small.ini" --resume
[ "$rc" = 2 ] || fail "run --resume without --out: exit code $rc, expected 2"

run report "$TMP/nothing"
[ "$rc" = 5 ] || fail "report on a missing directory: exit code $rc, expected 5"
grep -q 'not a sweep directory' "$TMP/err" || fail "report on a missing directory: $(cat "$TMP/err")"
run report small --group-by train.batch
[ "$rc" = 2 ] || fail "report --group-by of an unswept key: exit code $rc, expected 2"
run report small --metric nope
[ "$rc" = 3 ] || fail "report --metric of an unknown field: exit code $rc, expected 3"
grep -q "metric 'nope' is in no cell's result.json" "$TMP/err" || fail "report --metric nope: $(cat "$TMP/err")"

for cmd in sweep report; do
    run $cmd --help
    [ "$rc" = 0 ] || fail "'flowlab $cmd --help': exit code $rc"
    grep -q "^usage: flowlab $cmd" "$TMP/out" || fail "'flowlab $cmd --help' prints no usage"
done
echo "ok: errors and help"

# ---- [sweep] gradvar = yes: gradvar per cell, SNR in the report ------------------

awk 'BEGIN { srand(3); print "a,b,c"; for (i = 0; i < 120; i++)
             printf "%.4f,%.4f,%.4f\n", rand(), rand(), rand() }' >"$TMP/gv.csv"
cat >"$TMP/gv.ini" <<EOF
[experiment]
task = vae
[data]
type = csv
path = $TMP/gv.csv
[encoder]
latent = 2
hidden = 8
context = 2
[decoder]
hidden = 8
[likelihood]
type = gaussian
[flow.1]
type = iaf
hidden = 6
[estimator]
k = 4
[train]
steps = 3
batch = 10
[eval]
k = 8
[sweep]
estimator.type = iwae, dreg
gradvar = yes
gradvar_estimators = iwae,dreg
gradvar_k = 1,4,16
gradvar_draws = 4
gradvar_n = 5
EOF
run sweep "$TMP/gv.ini" --out gv
[ "$rc" = 0 ] || fail "gradvar sweep: exit code $rc: $(tail -3 "$TMP/err")"
for c in gv/estimator.type=*; do
    [ -s "$c/gradvar.json" ] || fail "$c lacks gradvar.json"
    grep -q -- '--- flowlab gradvar' "$c/log.txt" || fail "$c/log.txt lacks gradvar's output"
done
grep -q '"dreg_k16_snr_inference"' "gv/estimator.type=dreg/gradvar.json" ||
    fail "gradvar.json lacks dreg at k = 16 (stl/dreg through an IAF posterior)"
grep -q '"iwae_k4_sec_per_step"' "gv/estimator.type=iwae/gradvar.json" ||
    fail "gradvar.json lacks seconds per step"
run report gv
[ "$rc" = 0 ] || fail "report of the gradvar sweep: exit code $rc: $(cat "$TMP/err")"
grep -q '^## Gradient SNR against k' gv/report.md || fail "report.md lacks the SNR table"
grep -qE '^\| dreg \| inference \|( [-0-9.e]+ \|){4}$' gv/report.md ||
    fail "report.md: no dreg inference row with 3 k and a slope: $(grep '^| dreg' gv/report.md)"
head -1 gv/report.csv | grep -q 'gv_iwae_k1_snr_generative_mean' || fail "report.csv lacks the SNR columns"
head -1 gv/report.csv | grep -q 'gv_dreg_k4_ess_mean' || fail "report.csv lacks the ESS columns"
[ -s gv/report_curves/snr-inference.png ] && [ -s gv/report_curves/snr-generative.png ] ||
    fail "the SNR charts are missing"
grep -q 'alt="inference gradient SNR against k"' gv/report.html || fail "report.html lacks the SNR chart"
# a rerun recomputes nothing but the missing gradvar.json
rm "gv/estimator.type=iwae/gradvar.json"
before=$(stat -c %Y "gv/estimator.type=dreg/gradvar.json")
sleep 1
run sweep "$TMP/gv.ini" --out gv
[ "$rc" = 0 ] || fail "gradvar sweep rerun: exit code $rc"
[ -s "gv/estimator.type=iwae/gradvar.json" ] || fail "the rerun did not run gradvar where it was missing"
[ "$(stat -c %Y "gv/estimator.type=dreg/gradvar.json")" = "$before" ] || fail "the rerun ran gradvar again"
sed 's/^gradvar = yes$/gradvar = no/' "$TMP/gv.ini" >"$TMP/gv2.ini"
run sweep "$TMP/gv2.ini" --dry-run
[ "$rc" = 3 ] || fail "gradvar_* without gradvar = yes: exit code $rc, expected 3"
grep -q "add 'gradvar = yes'" "$TMP/err" || fail "gradvar_* without gradvar: $(cat "$TMP/err")"
sed 's/^gradvar_k = .*/gradvar_k = 1,0/' "$TMP/gv.ini" >"$TMP/gv2.ini"
run sweep "$TMP/gv2.ini" --dry-run
[ "$rc" = 3 ] || fail "gradvar_k = 1,0: exit code $rc, expected 3"
grep -q "gv2.ini:28: \[sweep\] gradvar_k = '1,0': expected positive integers" "$TMP/err" ||
    fail "gradvar_k = 1,0: $(cat "$TMP/err")"
echo "ok: [sweep] gradvar = yes runs gradvar per cell and the report shows SNR against k"

if [ "$failures" -gt 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all sweep checks passed"
