#!/usr/bin/env bash
# test_train.sh - issue 20 item 6 and issue 21 item 6 through the flowlab
# command: best.flc holds the best validation figure and eval/sample --best
# use it; early stopping survives a resume (its state is in the
# checkpoint); --unset on run and sweep; the default checkpoint_every; runs/ and sweeps/ in .gitignore. Run by meson test
# (FLOWLAB_EXE, FLOWLAB_SOURCE_ROOT).
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
unset FLOWLAB_PLUGIN_PATH
QS="$SRC/experiments/quickstart.ini"

. "$(dirname "$0")/lib.sh"

SMALL=(--set data.test_size=300 --set flow.1.repeat=2 --set flow.1.hidden=16,16
       --set train.batch=128 --set train.ema=0)

# A field of result.json (a number), or empty.
field() { sed -n "s/.*\"$2\": *\([-0-9.e]*\).*/\1/p" "$1/result.json" | head -1; }
# Column NAME of metrics.csv, one value a line.
column() {
    awk -F, -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
                       k && $k != "" { print $1, $k }' "$1/metrics.csv"
}

# ---- best.flc: the evaluation with the lowest valid_nll ----
run run "$QS" --out "$TMP/best" "${SMALL[@]}" --set train.steps=60 --set train.eval_every=5 \
    --set train.lr=0.02
expect_ok "a run with a validation split"
[ -f "$TMP/best/best.flc" ] || fail "no best.flc"
best_line=$(column "$TMP/best" valid_nll | sort -g -k2 | head -1)
best_step=${best_line%% *}
best_nll=${best_line#* }
[ "$(field "$TMP/best" best_step)" = "$best_step" ] ||
    fail "result.json best_step $(field "$TMP/best" best_step), metrics.csv's best row $best_step"
[ "$(field "$TMP/best" best_valid_nll)" = "$best_nll" ] ||
    fail "result.json best_valid_nll $(field "$TMP/best" best_valid_nll), metrics.csv $best_nll"
run eval "$TMP/best" --best --split valid
expect_ok "eval --best"
got=$(sed -n 's/.*"nll": *\([-0-9.e]*\).*/\1/p' "$TMP"/best/best/eval-valid-n*.json)
[ "$got" = "$best_nll" ] || fail "best.flc scores valid NLL $got, the best evaluation was $best_nll"
[ -f "$TMP/best/eval.json" ] && fail "eval --best wrote over the run's own eval.json"
run eval "$TMP/best" --split valid
last=$(column "$TMP/best" valid_nll | tail -1)
got=$(sed -n 's/.*"nll": *\([-0-9.e]*\).*/\1/p' "$TMP"/best/eval-valid-n*.json)
[ "$got" = "${last#* }" ] || fail "eval without --best scores $got, the last evaluation ${last#* }"
run sample "$TMP/best" --best -n 3 --seed 1
expect_ok "sample --best"
[ "$(wc -l <"$TMP/out")" = 4 ] || fail "sample --best: $(wc -l <"$TMP/out") lines, expected 4"
run run "$QS" --out "$TMP/nobest" "${SMALL[@]}" --set train.steps=5 --set train.keep_best=false
[ -f "$TMP/nobest/best.flc" ] && fail "keep_best = false wrote best.flc"
run eval "$TMP/nobest" --best
expect_error "eval --best without best.flc" 5 "$TMP/nobest" "no best.flc" "keep_best"

# ---- every extra at once: the same bits for 1 and 3 threads ----
ALL=("${SMALL[@]}" --set train.steps=30 --set train.eval_every=10 --set train.schedule=cosine
     --set train.warmup=5 --set train.lr_min=1e-4 --set train.clip_norm=0.5
     --set train.weight_decay=0.01 --set train.patience=5)
OMP_NUM_THREADS=1 run run "$QS" --out "$TMP/t1" "${ALL[@]}" --set experiment.threads=1
expect_ok "all the training keys, 1 thread"
OMP_NUM_THREADS=3 run run "$QS" --out "$TMP/t3" "${ALL[@]}" --set experiment.threads=3
expect_ok "all the training keys, 3 threads"
for f in checkpoint.flc best.flc; do
    cmp -s "$TMP/t1/$f" "$TMP/t3/$f" || fail "$f differs between 1 and 3 threads"
done
grep -q "clip_norm = 0.5 scaled the gradient down in" "$TMP/err" || fail "no clipping line"

# ---- early stopping across a resume ----
# lr = 0: no evaluation improves on the first (step 2), so patience 3 with an
# evaluation every 2 steps stops at step 8
STOP=("${SMALL[@]}" --set train.lr=0 --set train.eval_every=2 --set train.patience=3)
run run "$QS" --out "$TMP/whole" "${STOP[@]}" --set train.steps=100
expect_ok "early stopping"
[ "$(field "$TMP/whole" steps)" = 8 ] || fail "stopped at step $(field "$TMP/whole" steps), not 8"
[ "$(field "$TMP/whole" stopped_early)" = 1 ] || fail "result.json: stopped_early is not 1"
grep -q "early stopping: valid_nll has not improved for 3 evaluations" "$TMP/err" ||
    fail "no early-stopping line"
# the same run cut at step 6 (two bad evaluations), then resumed: stops at 8
run run "$QS" --out "$TMP/cut" "${STOP[@]}" --set train.steps=6
rm "$TMP/cut/result.json"
run run "$QS" --out "$TMP/cut" "${STOP[@]}" --set train.steps=100 --resume
expect_ok "resuming a run with early stopping"
[ "$(field "$TMP/cut" steps)" = 8 ] ||
    fail "the resumed run stopped at step $(field "$TMP/cut" steps), the uninterrupted one at 8"
[ "$(field "$TMP/cut" best_step)" = 2 ] || fail "the resumed run lost its best step"
cmp -s "$TMP/cut/best.flc" "$TMP/whole/best.flc" || fail "best.flc differs after the resume"

# ---- --unset ----
ini="$TMP/coupling.ini"
cat >"$ini" <<'EOF'
[experiment]
task = density

[data]
type = moons
test_size = 300

[flow.1]
type = affine-coupling
repeat = 2
hidden = 16,16
mask = alternate
scale_bound = 1

[train]
steps = 3
batch = 64
EOF
run run "$ini" --out "$TMP/maf" --set flow.1.type=maf
[ "$rc" = 0 ] && fail "maf accepted affine-coupling's keys"
run run "$ini" --out "$TMP/maf" --unset flow.1 --set flow.1.type=maf --set flow.1.repeat=2
expect_ok "--unset flow.1 --set flow.1.type=maf"
grep -q "^type = maf" "$TMP/maf/config.ini" || fail "config.ini has no maf layer"
grep -q "^mask" "$TMP/maf/config.ini" && fail "an unset key reached config.ini"
run run "$ini" --out "$TMP/unset2" --unset flow.1.hidden
expect_ok "--unset one key"
grep -q "^hidden = 64,64" "$TMP/unset2/config.ini" || fail "the unset key is not at its default"
run run "$ini" --out "$TMP/typo" --unset flow.1.hiden
expect_error "--unset of a missing key" 3 "--unset flow.1.hiden" "has no key hiden"
cat >"$TMP/sweep.ini" <<'EOF'
[experiment]
name = unset-sweep
task = density

[data]
type = moons
test_size = 300

[flow.1]
type = affine-coupling
hidden = 16,16
scale_bound = 1

[train]
steps = 2
batch = 64

[sweep]
experiment.seed = 1, 2
EOF
run sweep "$TMP/sweep.ini" --out "$TMP/sw" --unset flow.1 --set flow.1.type=maf
expect_ok "sweep --unset"
for c in "$TMP"/sw/*/config.ini; do
    grep -q "^type = maf" "$c" || fail "sweep cell $c is not maf"
done
run sweep "$TMP/sweep.ini" --out "$TMP/sw2" --unset experiment.seed
expect_error "sweep --unset of a swept key" 3 "experiment.seed is swept"

# (the vae's warning for a posterior flow without the encoder's context h
# is tested in test_cli.sh)
run run "$ini" --out "$TMP/nowarn"
expect_ok "the file as written"

# ---- defaults ----
grep -q "^checkpoint_every = 1000$" "$TMP/nowarn/config.ini" ||
    fail "the default checkpoint_every is not 1000"
for d in /runs/ /sweeps/; do
    grep -qxF "$d" "$SRC/.gitignore" || fail ".gitignore lacks $d"
done

finish "train"
