#!/bin/sh
# bench_realnvp.sh - flowlab against its PyTorch reference on the Real NVP
# recipe (experiments/images/realnvp-fashion.ini, bench/torch_realnvp.py):
# the same model, steps, batch 64, Adam lr 1e-3, run alternately (the
# machine drifts by tens of percent over minutes), several rounds, one
# table: training images/s, test bits/dim with its standard error, and the
# ratios.
#
#   bench/bench_realnvp.sh [STEPS [ROUNDS]]        (defaults 300 and 3)
#
# Environment: FLOWLAB (default build/framework/flowlab), EXP (default
# experiments/images/realnvp-fashion.ini), FEATURES and BLOCKS of the
# reference's s/t nets (default 32 and 2, the recipe's short version: keep
# them equal to the INI file's), TEST (test images the reference scores:
# all, or a number for a seeded subset), OUT (run directories, default a
# temporary folder, removed at the end unless OUT is given).
#
# Round r trains both with seed r. flowlab's rate is result.json's
# steps_per_second x batch (training loop only: eval_every = STEPS, so the
# test set is scored once, after training); the reference's is its own
# count of the training loop. Run from the top of the source tree, after
# `ninja -C build`.
set -eu

STEPS=${1:-300}
ROUNDS=${2:-3}
FLOWLAB=${FLOWLAB:-build/framework/flowlab}
EXP=${EXP:-experiments/images/realnvp-fashion.ini}
FEATURES=${FEATURES:-32}
BLOCKS=${BLOCKS:-2}
TEST=${TEST:-all}
HERE=$(dirname "$0")

for f in "$FLOWLAB" "$EXP" "$HERE/torch_realnvp.py"; do
    if [ ! -e "$f" ]; then
        echo "bench_realnvp: $f not found (run from the source tree after ninja -C build)" >&2
        exit 2
    fi
done
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "bench_realnvp: no PyTorch (apt-get install python3-torch libopenblas0-openmp)" >&2
    exit 2
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    KEEP=1
else
    OUT=$(mktemp -d)
    KEEP=0
fi

# OpenBLAS's SkylakeX kernels on AVX-512 machines, for both sides (the
# environment's default core here is Haswell; docs/performance.md).
if grep -q avx512f /proc/cpuinfo; then
    OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
    export OPENBLAS_CORETYPE
fi

# PyTorch at its best (bench/torch_common.py, docs/performance.md): the
# OpenMP OpenBLAS for that process only, glibc keeping freed memory,
# passive OpenMP waiting on a shared machine, 2 threads.
torch_run() {
    env LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
        MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \
        MALLOC_TOP_PAD_=268435456 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} \
        /usr/bin/python3 "$HERE/torch_realnvp.py" --steps "$STEPS" --batch 64 \
        --features "$FEATURES" --blocks "$BLOCKS" --test "$TEST" --seed "$1" \
        --layout "${LAYOUT:-nhwc}"
}

# One line "images/s bpd se" from a flowlab run directory's result.json.
flowlab_result() {
    /usr/bin/python3 - "$1/result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
def pick(*names):
    for n in names:
        if n in r:
            return float(r[n])
    sys.exit("bench_realnvp: %s has none of %s (keys: %s)" % (sys.argv[1], names, sorted(r)))
rate = pick("steps_per_second") * 64  # --set train.batch=64
print("%.1f %.4f %.4f" % (rate, pick("test_bpd", "test_bits_per_dim"),
                          pick("test_bpd_se", "test_bits_per_dim_se")))
EOF
}

ROWS="$OUT/rows.txt"
: > "$ROWS"
echo "# bench_realnvp: $STEPS steps, batch 64, $ROUNDS rounds, $EXP vs torch_realnvp.py (F=$FEATURES, B=$BLOCKS)"
echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    dir="$OUT/flowlab-$r"
    rm -rf "$dir"
    "$FLOWLAB" --quiet run "$EXP" --set "experiment.seed=$r" --set "train.steps=$STEPS" \
        --set train.batch=64 --set "train.eval_every=$STEPS" --out "$dir" >/dev/null
    fl=$(flowlab_result "$dir")
    tl=$(torch_run "$r" | tee "$OUT/torch-$r.txt" | head -1)
    tr=$(echo "$tl" | sed 's/.*images\/s=\([^ ]*\).*/\1/')
    tb=$(echo "$tl" | sed 's/.*test_bpd=\([^ ]*\).*/\1/')
    ts=$(echo "$tl" | sed 's/.* se=\([^ ]*\).*/\1/')
    echo "$r $fl $tr $tb $ts" >> "$ROWS"
    r=$((r + 1))
done
grep '^# torch' "$OUT/torch-1.txt" || true

/usr/bin/python3 - "$ROWS" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
print("%5s | %10s %16s | %10s %16s | %7s %8s" % ("round", "flowlab/s", "flowlab bpd", "torch/s",
      "torch bpd", "speed", "bpd diff"))
for r, fr, fb, fs, tr, tb, ts in rows:
    print("%5d | %10.1f %9.4f+-%.4f | %10.1f %9.4f+-%.4f | %6.2fx %+8.4f"
          % (r, fr, fb, fs, tr, tb, ts, fr / tr, fb - tb))
med = lambda i: statistics.median(x[i] for x in rows)
print("%5s | %10.1f %9.4f        | %10.1f %9.4f        | %6.2fx %+8.4f"
      % ("median", med(1), med(2), med(4), med(5),
         statistics.median(x[1] / x[4] for x in rows), statistics.median(x[2] - x[5] for x in rows)))
EOF
if [ "$KEEP" = 0 ]; then rm -rf "$OUT"; fi
