#!/usr/bin/env bash
# test_logprob.sh - evaluation subsets drawn at random (tasks/subset.h) and
# `flowlab logprob` (CSV and .npy rows, density and vae runs, its errors).
# Run by meson test, which sets FLOWLAB_EXE and FLOWLAB_TEST_DIR.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
unset FLOWLAB_PLUGIN_PATH # only the build tree's plugins
export OMP_NUM_THREADS=1
. "$(dirname "$0")/lib.sh"
RUN_OPTS=(--quiet)

# check NAME COMMAND...: "ok: NAME" when COMMAND succeeds, else a failure.
check() {
    local name=$1
    shift
    if "$@"; then echo "ok: $name"; else fail "$name"; fi
}

# ---- an ordered test file: the random subset is unbiased, the first rows not
# Training rows ~ N(0, 1) in two columns; the test file's first column
# rises with the row (0 .. 3), so -log p(x) rises with the row too.
awk 'BEGIN { srand(11); print "a,b"; for (i = 0; i < 2000; i++) {
             u = rand(); v = rand(); r = sqrt(-2 * log(u + 1e-12));
             printf "%.5f,%.5f\n", r * cos(6.2831853 * v), r * sin(6.2831853 * v) } }' \
    >"$TMP/train.csv"
awk 'BEGIN { srand(12); print "a,b"; for (i = 0; i < 4000; i++)
             printf "%.5f,%.5f\n", 3 * i / 3999, rand() - 0.5 }' >"$TMP/ordered.csv"
printf '%s\n' "[experiment]" "name = ordered" "[data]" "type = csv" "path = $TMP/train.csv" \
    "test_path = $TMP/ordered.csv" "standardize = false" "[flow.1]" "type = affine-coupling" \
    "repeat = 2" "hidden = 8" "[train]" "steps = 40" "batch = 128" >"$TMP/dens.ini"
run run "$TMP/dens.ini" --out "$TMP/dens"
expect_ok "a density run on an ordered test file"
# "test split, N random rows: NLL M +- S nats; FILE"
nll() { sed -E 's/.*NLL ([-0-9.]+) \+- ([0-9.]+) nats.*/\1 \2/' "$TMP/out"; }
run eval "$TMP/dens"
read -r full _ <<<"$(nll)"
run eval "$TMP/dens" --n 300
expect_ok "flowlab eval --n 300 (random by default)"
check "eval --n says random" grep -q "300 random rows" "$TMP/out"
check "eval-test-n300.json records pick = random" \
    grep -q '"pick": "random"' "$TMP/dens/eval-test-n300.json"
read -r rnd rse <<<"$(nll)"
run eval "$TMP/dens" --n 300 --pick first
expect_ok "flowlab eval --n 300 --pick first"
check "--pick first writes eval-test-n300-first.json" test -f "$TMP/dens/eval-test-n300-first.json"
read -r fst _ <<<"$(nll)"
unbiased() {
    awk -v f="$full" -v r="$rnd" -v s="$rse" -v q="$fst" 'BEGIN {
        if (f == "" || r == "" || s + 0 <= 0 || q == "") exit 1;
        d = r - f; if (d < 0) d = -d; e = q - f; if (e < 0) e = -e;
        printf "  full %.4f, random 300: %.4f +- %.4f (%.1f se off), first 300: %.4f (%.1f se off)\n",
               f, r, s, d / s, q, e / s;
        exit !(d < 3 * s && e > 10 * s) }'
}
check "the random subset of an ordered file is within 3 se of the full mean, the first rows not" \
    unbiased
run eval "$TMP/dens" --n 300 --pick last
expect_error "eval --pick last" 2 "--pick expects random or first"

# ---- logprob of a density run ---------------------------------------------
# The mean of -log p over the test file's rows is the run's full test NLL.
run logprob "$TMP/dens" --in "$TMP/ordered.csv" --out "$TMP/lp.csv"
expect_ok "logprob --in CSV --out FILE"
check "logprob's header" test "$(head -1 "$TMP/lp.csv")" = "row,log_prob"
check "logprob writes one line per row" test "$(wc -l <"$TMP/lp.csv")" = 4001
mean_is_eval() {
    awk -F, -v f="$full" 'NR > 1 { s -= $2; n++ } END {
        m = s / n; d = m - f; if (d < 0) d = -d;
        printf "  mean -log p %.6f, eval NLL %.4f\n", m, f; exit !(n == 4000 && d < 2e-4) }' \
        "$TMP/lp.csv"
}
check "logprob's rows average to flowlab eval's NLL" mean_is_eval
# the same rows as a .npy (v1 <f8, and v2 <f4): the same numbers on stdout
python3 - "$TMP/ordered.csv" "$TMP/o8.npy" "$TMP/o4.npy" <<'PY'
import struct, sys
rows = [tuple(map(float, l.split(","))) for l in open(sys.argv[1]).read().split()[1:]]
def save(path, code, version, size):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': (%d, 2), }" % (code, len(rows))
    pre = 10 if version == 1 else 12
    h += " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY" + bytes([version, 0]))
        f.write(struct.pack("<H" if version == 1 else "<I", len(h)) + h.encode())
        for r in rows:
            f.write(struct.pack("<" + size * 2, *r))
save(sys.argv[2], "<f8", 1, "d")
save(sys.argv[3], "<f4", 2, "f")
PY
run logprob "$TMP/dens" --in "$TMP/o8.npy"
expect_ok "logprob --in .npy (v1, <f8)"
check "logprob of the <f8 .npy is the CSV's" cmp -s "$TMP/out" "$TMP/lp.csv"
run logprob "$TMP/dens" --in "$TMP/o4.npy"
expect_ok "logprob --in .npy (v2, <f4)"
check "logprob of the <f4 .npy has every row" test "$(wc -l <"$TMP/out")" = 4001

# ---- its errors: one line each ------------------------------------------------
printf '1,2,3\n4,5,6\n' >"$TMP/wide.csv"
run logprob "$TMP/dens" --in "$TMP/wide.csv"
expect_error "logprob: rows of the wrong width" 5 "wide.csv: rows of 3 values" "2 values"
printf '1,2\n3,x\n' >"$TMP/bad.csv"
run logprob "$TMP/dens" --in "$TMP/bad.csv"
expect_error "logprob: a bad CSV" 5 "bad.csv:2: column 2 is not a number"
printf 'PK\003\004 not numpy' >"$TMP/bad.npy"
run logprob "$TMP/dens" --in "$TMP/bad.npy"
expect_error "logprob: a bad .npy" 5 "bad.npy: not a .npy file"
run logprob "$TMP/none" --in "$TMP/ordered.csv"
expect_error "logprob: a missing run" 5 "$TMP/none"
run logprob "$TMP/dens" --in "$TMP/missing.csv"
expect_error "logprob: a missing file" 5 "missing.csv"
run logprob "$TMP/dens" --in "$TMP/ordered.csv" --k 5
expect_error "logprob --k on a density run" 3 "--k does not apply"
run logprob "$TMP/dens"
check "logprob without --in: exit 2 and the usage" \
    test "$rc" = 2 -a "$(head -1 "$TMP/err")" = "flowlab logprob: error: need RUN_DIR and --in FILE"

# ---- a vae: random [eval] n and valid_n by default; logprob = IWAE-k per point
printf '%s\n' "[experiment]" "task = vae" "seed = 4" "[data]" "type = csv" \
    "path = $TMP/train.csv" "test_path = $TMP/ordered.csv" "standardize = false" \
    "[encoder]" "latent = 1" "hidden = 8" "[decoder]" "hidden = 8" "[likelihood]" \
    "type = gaussian" "[estimator]" "type = iwae" "k = 3" "[train]" "steps = 20" "batch = 50" \
    "eval_every = 10" "[eval]" "k = 20" "n = 30" "valid_n = 40" >"$TMP/vae.ini"
run run "$TMP/vae.ini" --out "$TMP/vae"
expect_ok "a vae run with [eval] n = 30"
check "eval.json records pick = random" grep -q '"pick": "random"' "$TMP/vae/eval.json"
check "config.ini spells out pick = random" grep -q "^pick = random" "$TMP/vae/config.ini"
points() { awk -F, 'NR > 1 { print $1 }' "$1" | tr '\n' ' '; }
check "[eval] n = 30 does not take the first 30 points" \
    test "$(points "$TMP/vae/eval_points.csv")" != "$(seq -s ' ' 0 29) "
run run "$TMP/vae.ini" --out "$TMP/vae-first" --set eval.pick=first
expect_ok "a vae run with [eval] pick = first"
check "pick = first takes the first 30 points" \
    test "$(points "$TMP/vae-first/eval_points.csv")" = "$(seq -s ' ' 0 29) "
# validation on other points: the validation columns differ
check "valid_n = 40 scores other points with pick = first" \
    test "$(cut -d, -f1,3,4 "$TMP/vae/metrics.csv")" != "$(cut -d, -f1,3,4 "$TMP/vae-first/metrics.csv")"
# logprob --k K of the whole test file = flowlab eval --k K's per-point values
run eval "$TMP/vae" --k 7 --n 4000
expect_ok "flowlab eval --k 7 on every point"
run logprob "$TMP/vae" --in "$TMP/ordered.csv" --k 7 --out "$TMP/vlp.csv"
expect_ok "logprob of a vae run"
same_as_eval() {
    [ -s "$TMP/vlp.csv" ] &&
        cmp -s <(awk -F, 'NR > 1 { print $2 }' "$TMP/vlp.csv") \
            <(awk -F, 'NR > 1 { print $2 }' "$TMP/vae/eval-test-k7-n4000_points.csv")
}
check "logprob --k 7 of a vae run is flowlab eval's IWAE-7 per point" same_as_eval

# ---- a vi run has no log p(x) -------------------------------------------------
printf '%s\n' "[experiment]" "task = vi" "[target]" "type = u1" "[estimator]" "type = elbo" \
    "[flow.1]" "type = planar" "repeat = 2" "[train]" "steps = 5" "batch = 16" >"$TMP/vi.ini"
run run "$TMP/vi.ini" --out "$TMP/vi"
expect_ok "a vi run"
run logprob "$TMP/vi" --in "$TMP/wide.csv"
expect_error "logprob of a vi run" 3 "density and vae runs" "vi"

finish logprob
