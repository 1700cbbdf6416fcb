#!/usr/bin/env bash
# test_mpi.sh - one run over several MPI ranks (train/dist.h, issue 14
# item 4): with [train] grad_blocks = 6 the final checkpoint is byte for
# byte the same for one process and for mpirun -n 2 and -n 3, on the
# density, vae (IWAE k = 5) and vi tasks, and with an actnorm layer (data-
# dependent init); `flowlab eval` gives the same numbers under mpirun; only
# rank 0 prints and writes; bad rank counts and batch-coupled layers are
# refused with one error line; a rank killed with -9 stops the others with
# one line each, the last checkpoint stays, and --resume under another N
# ends on the uninterrupted run's checkpoint. Exit 77 (skipped) without an
# MPI build or mpirun. Run by meson test (FLOWLAB_EXE, FLOWLAB_SOURCE_ROOT,
# FLOWLAB_MPI).
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
unset FLOWLAB_PLUGIN_PATH
. "$(dirname "$0")/mpi.sh"
need_mpi
# Open MPI leaks from MPI_Init in components it has unloaded by exit
# (tests/test_sweep.sh): no leak checking under mpirun.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"

. "$(dirname "$0")/lib.sh"
cd "$TMP" || exit 1

# mpirun N ARGS...: flowlab ARGS... on N ranks (N = 0: one plain process).
mpi() {
    local n=$1
    shift
    if [ "$n" = 0 ]; then
        "$EXE" "$@" >"$TMP/out" 2>"$TMP/err"
    else
        mpirun --oversubscribe -n "$n" "$EXE" "$@" >"$TMP/out" 2>"$TMP/err"
    fi
    rc=$?
}

# same_over_ranks NAME EXP.ini ARGS...: the final checkpoint of one plain
# process equals those of mpirun -n 2 and -n 3 (grad_blocks = 6), and only
# rank 0 printed its closing lines.
same_over_ranks() {
    local name=$1 exp=$2 before=$failures
    shift 2
    for n in 0 2 3; do
        mpi "$n" run "$exp" --out "$name-n$n" --set train.grad_blocks=6 \
            --set experiment.threads=1 "$@"
        [ "$rc" = 0 ] || { fail "$name: mpirun -n $n: exit code $rc"; return; }
        [ "$(grep -c 'run directory' "$TMP/out")" = 1 ] ||
            fail "$name: -n $n: the closing line is not printed exactly once"
    done
    for n in 2 3; do
        cmp -s "$name-n0/checkpoint.flc" "$name-n$n/checkpoint.flc" ||
            fail "$name: the checkpoint of mpirun -n $n differs from one process's"
        diff <(sed 's/,[^,]*$//' "$name-n0/metrics.csv") \
            <(sed 's/,[^,]*$//' "$name-n$n/metrics.csv") >/dev/null ||
            fail "$name: metrics.csv of mpirun -n $n differs"
    done
    if [ "$failures" = "$before" ]; then echo "ok: $name: one checkpoint for 1, 2 and 3 ranks"; fi
}

# ---- density (Real NVP on moons), and with actnorm's data-dependent init ----
QS="$SRC/experiments/quickstart.ini"
DENS=(--set train.steps=40 --set train.batch=96 --set train.eval_every=20
      --set flow.1.repeat=2 --set flow.1.hidden=16 --set data.test_size=300)
same_over_ranks density "$QS" "${DENS[@]}"
cat >actnorm.ini <<EOF
[experiment]
task = density
seed = 4
[data]
type = moons
test_size = 300
[flow.1]
type = actnorm
[flow.2]
type = affine-coupling
repeat = 2
hidden = 16
[train]
steps = 30
batch = 60
EOF
same_over_ranks actnorm actnorm.ini

# ---- vae: IWAE k = 5 on a small binary CSV ----------------------------------
awk 'BEGIN { srand(7); print "a,b,c,d,e,f"; for (i = 0; i < 600; i++)
             printf "%d,%d,%d,%d,%d,%d\n", rand() < 0.3, rand() < 0.6, rand() < 0.5,
                    rand() < 0.2, rand() < 0.7, rand() < 0.5 }' >bin.csv
cat >vae.ini <<EOF
[experiment]
task = vae
seed = 3
[data]
type = csv
path = $TMP/bin.csv
standardize = false
[encoder]
latent = 2
hidden = 16
[decoder]
hidden = 16
[likelihood]
type = bernoulli
[estimator]
type = iwae
k = 5
[train]
steps = 40
batch = 12
eval_every = 20
[eval]
k = 20
valid_k = 5
EOF
same_over_ranks vae vae.ini
# the final test evaluation (eval.json) and `flowlab eval` do not depend on N
untimed() { grep -v seconds "$1"; }
diff <(untimed vae-n0/eval.json) <(untimed vae-n3/eval.json) >/dev/null ||
    fail "vae: eval.json differs under mpirun -n 3"
mpi 0 eval vae-n0 --k 30 --n 50
cp vae-n0/eval-test-k30-n50.json one.json
cp vae-n0/eval-test-k30-n50_points.csv one_points.csv
mpi 3 eval vae-n0 --k 30 --n 50
[ "$rc" = 0 ] || fail "eval under mpirun -n 3: exit code $rc"
[ "$(grep -c 'IWAE-k' "$TMP/out")" = 1 ] || fail "eval: the table is not printed exactly once"
if diff <(untimed one.json) <(untimed vae-n0/eval-test-k30-n50.json) >/dev/null &&
   cmp -s one_points.csv vae-n0/eval-test-k30-n50_points.csv; then
    echo "ok: flowlab eval gives the same numbers under mpirun -n 3"
else
    fail "flowlab eval under mpirun -n 3 differs from one process"
fi

# ---- vi: planar flow on U1 ---------------------------------------------------
same_over_ranks vi "$SRC/experiments/vi/u1-planar-k8.ini" --set train.steps=40 \
    --set train.eval_every=20 --set train.batch=48

# ---- refusals: one error line, from rank 0 only --------------------------------
one_error() {
    local name=$1 code=$2 before=$failures
    shift 2
    [ "$rc" = "$code" ] || fail "$name: exit code $rc, expected $code"
    [ "$(grep -c '^flowlab: error: ' "$TMP/err")" = 1 ] ||
        fail "$name: $(grep -c '^flowlab: error: ' "$TMP/err") error lines, expected 1"
    for text in "$@"; do
        grep -qF -- "$text" "$TMP/err" || fail "$name: stderr lacks '$text'"
    done
    if [ "$failures" = "$before" ]; then echo "ok: $name"; fi
}
mpi 3 run "$QS" --out few "${DENS[@]}" --set train.grad_blocks=2
one_error "3 ranks with grad_blocks = 2 are refused" 3 "3 ranks" "[train] grad_blocks >= 3"
cat >bn.ini <<EOF
[experiment]
task = density
[data]
type = moons
[flow.1]
type = affine-coupling
[flow.2]
type = batch-norm
[train]
steps = 5
batch = 32
grad_blocks = 4
EOF
mpi 0 run bn.ini --out bn
one_error "a batch-coupled layer with grad_blocks > 1 is refused" 3 "[flow.2] batch-norm" \
    "grad_blocks = 4"

# ---- a rank killed with -9 -------------------------------------------------------
LONG=(--set train.steps=2500 --set train.checkpoint_every=100 --set train.eval_every=1000
      --set train.grad_blocks=6 --set experiment.threads=1 --set train.batch=96
      --set flow.1.repeat=2 --set flow.1.hidden=16 --set data.test_size=300)
mpi 0 run "$QS" --out whole "${LONG[@]}"
[ "$rc" = 0 ] || fail "the uninterrupted run: exit code $rc"
mpirun --oversubscribe -n 3 "$EXE" run "$QS" --out killed "${LONG[@]}" >"$TMP/out" 2>"$TMP/err" &
MP=$!
for _ in $(seq 200); do
    [ -s killed/checkpoint.flc ] && break
    sleep 0.05
done
victim=$(pgrep -P "$MP" | sed -n 2p)
if [ -z "$victim" ] || [ ! -s killed/checkpoint.flc ]; then
    fail "kill: the run ended or wrote no checkpoint before the kill"
else
    kill -9 "$victim"
    wait "$MP"
    rc=$?
    before=$failures
    [ "$rc" != 0 ] || fail "kill: mpirun exited 0"
    [ ! -e killed/result.json ] || fail "kill: the run finished before the kill (make it longer)"
    [ "$(grep -c ': stopping at step [0-9]*: the job was stopped' "$TMP/err")" = 2 ] ||
        fail "kill: expected one line from each of the 2 surviving ranks"
    grep -qE "keeps its last checkpoint \(step [0-9]+\): continue with .*--resume" "$TMP/err" ||
        fail "kill: the line does not name the checkpoint and --resume"
    grep -qF "continue with flowlab run $QS --out killed --resume" "$TMP/err" ||
        fail "kill: the line does not give the experiment file and run directory to resume"
    if [ "$failures" = "$before" ]; then
        echo "ok: a killed rank stops the others with one line each"
    fi
    mpi 2 run "$QS" --out killed "${LONG[@]}" --resume
    [ "$rc" = 0 ] || fail "kill: --resume under mpirun -n 2: exit code $rc"
    if cmp -s killed/checkpoint.flc whole/checkpoint.flc; then
        echo "ok: --resume under 2 ranks ends on the uninterrupted run's checkpoint"
    else
        fail "kill: the resumed checkpoint differs from the uninterrupted run's"
    fi
fi

finish MPI
