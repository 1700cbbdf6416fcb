#!/usr/bin/env bash
# test_resume.sh - `flowlab run --resume` cannot mix runs (issue 13): it
# refuses a finished run, another experiment (naming the first differing
# section.key and both values) and a checkpoint past the new steps, each
# with one error line, a non-zero exit and the run directory untouched;
# after a kill -9, the resumed run's metrics.csv is the uninterrupted run's
# (but for train_seconds). Run by meson test (FLOWLAB_EXE,
# FLOWLAB_SOURCE_ROOT).
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
unset FLOWLAB_PLUGIN_PATH
QS="$SRC/experiments/quickstart.ini"

. "$(dirname "$0")/lib.sh"

# A digest of every file in DIR (names and bytes).
digest() { (cd "$1" && for f in $(ls | sort); do echo "$f $(cksum <"$f")"; done); }

# metrics.csv without its last column (train_seconds, a clock).
metrics() { sed 's/,[^,]*$//' "$1/metrics.csv"; }

SMALL=(--set train.steps=40 --set train.checkpoint_every=20 --set data.test_size=200)

# ---- a finished run is not resumed, and nothing in it is rewritten ----
run run "$QS" --out "$TMP/done" "${SMALL[@]}"
[ "$rc" = 0 ] || fail "the small run failed ($rc)"
before=$(digest "$TMP/done")
run run "$QS" --out "$TMP/done" "${SMALL[@]}" --resume
expect_error "a finished run is refused" 5 "$TMP/done" "the run is finished (result.json)"
[ "$(digest "$TMP/done")" = "$before" ] || fail "refusing a finished run changed its directory"
run run "$QS" --out "$TMP/done" --set train.steps=80 --set data.test_size=200 --resume
expect_error "a finished run is refused with more steps too" 5 "the run is finished"
[ "$(digest "$TMP/done")" = "$before" ] || fail "refusing a finished run changed its directory"

# ---- an unfinished run (its checkpoint at step 40, no result.json) ----
cp -r "$TMP/done" "$TMP/open"
rm "$TMP/open/result.json"
before=$(digest "$TMP/open")
run run "$QS" --out "$TMP/open" "${SMALL[@]}" --set experiment.seed=3 --set data.type=rings --resume
expect_error "another seed and data set are refused" 3 "$TMP/open/config.ini" \
    "[experiment] seed = 2 in the run, 3 in this experiment" "may change:"
[ "$(digest "$TMP/open")" = "$before" ] || fail "a refused resume changed the run directory"
run run "$QS" --out "$TMP/open" "${SMALL[@]}" --set train.lr=0.01 --resume
expect_error "another learning rate is refused" 3 "[train] lr = 1e-3 in the run, 0.01 in this experiment"
run run "$QS" --out "$TMP/open" --set train.steps=30 --set data.test_size=200 --resume
expect_error "steps below the checkpoint's are refused" 3 "$TMP/open/checkpoint.flc" \
    "at step 40, past the 30 steps"
[ "$(digest "$TMP/open")" = "$before" ] || fail "a refused resume changed the run directory"

# config.ini of another run beside this checkpoint: the checkpoint's own
# record of its experiment refuses it
run run "$QS" --out "$TMP/seed3" "${SMALL[@]}" --set experiment.seed=3
cp "$TMP/seed3/config.ini" "$TMP/open/config.ini"
run run "$QS" --out "$TMP/open" "${SMALL[@]}" --set experiment.seed=3 --resume
expect_error "a checkpoint of another experiment is refused" 3 "$TMP/open/checkpoint.flc" \
    "saved by a run of another experiment"
cp "$TMP/done/config.ini" "$TMP/open/config.ini"

# keys that may change: steps, eval_every, threads, [eval]
run run "$QS" --out "$TMP/open" --set train.steps=60 --set train.checkpoint_every=20 \
    --set train.eval_every=30 --set experiment.threads=1 --set eval.batch=700 \
    --set data.test_size=200 --resume
[ "$rc" = 0 ] && [ -f "$TMP/open/result.json" ] && echo "ok: keys that may change are accepted" ||
    fail "resuming with more steps and other cadences failed ($rc)"

# ---- kill -9 and resume: metrics.csv as uninterrupted ----
LONG=(--set train.steps=1500 --set train.checkpoint_every=100 --set train.eval_every=150
      --set data.test_size=200)
run run "$QS" --out "$TMP/whole" "${LONG[@]}"
[ "$rc" = 0 ] || fail "the uninterrupted run failed ($rc)"
killed=0
for attempt in 1 2 3; do
    rm -rf "$TMP/cut"
    "$EXE" run "$QS" --out "$TMP/cut" "${LONG[@]}" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 2000); do
        [ -f "$TMP/cut/checkpoint.flc" ] && break
        sleep 0.01
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -f "$TMP/cut/checkpoint.flc" ] && [ ! -f "$TMP/cut/result.json" ]; then
        killed=1
        break
    fi
done
if [ "$killed" = 1 ]; then
    run run "$QS" --out "$TMP/cut" "${LONG[@]}" --resume
    [ "$rc" = 0 ] || fail "resuming the killed run failed ($rc)"
    if [ "$(metrics "$TMP/cut")" = "$(metrics "$TMP/whole")" ]; then
        echo "ok: metrics.csv after kill -9 and resume is the uninterrupted run's"
    else
        fail "metrics.csv after kill -9 and resume differs: $(diff <(metrics "$TMP/cut") <(metrics "$TMP/whole") | head -5)"
    fi
    cmp -s "$TMP/cut/result.json" "$TMP/whole/result.json" ||
        [ "$(grep -v second "$TMP/cut/result.json")" = "$(grep -v second "$TMP/whole/result.json")" ] ||
        fail "result.json after kill -9 and resume differs"
else
    fail "could not kill the run between its first checkpoint and its end"
fi

finish resume
