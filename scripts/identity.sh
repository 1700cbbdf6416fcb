#!/usr/bin/env bash
# Proves that a refactor changed no number: builds BASE (a git revision) into
# a scratch folder, runs the same experiments with it and with BUILD's
# flowlab, and compares every output file byte for byte, time fields
# excluded (provenance.json, log.txt, report.md and .html, and the "*seconds*" / "*per_second*"
# fields of JSON and CSV files). Exit 0 when identical, 1 on a difference
# (the differing files are listed), 77 when BASE cannot be checked out.
#
#   bash scripts/identity.sh [--mnist] [--keep] BASE [BUILD]
#
#   --mnist  also the runs that need ../shared/data/binarized_mnist
#            (a 200-step IWAE k=5 VAE and a 100-step VAE with two IAF steps);
#            FLOWLAB_MNIST_DIR overrides where MNIST is read from
#   --keep   keep the scratch folder (printed) for inspection
#   BASE     e.g. fbc3179, the commit before the architecture refactor
#   BUILD    the build folder of the tree under test (default: build)
#
# Without --mnist: the quickstart (with sample and plot), a U1 planar vi run,
# a 4-cell density sweep and its report. tests/meson.build runs that set.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

MNIST=0 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mnist) MNIST=1; shift ;;
    --keep) KEEP=1; shift ;;
    -*) echo "identity: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { sed -n '2,19p' "$0" >&2; exit 2; }
BASE=$1
BUILD=$(cd "${2:-$ROOT/build}" && pwd)

git -C "$ROOT" rev-parse --verify -q "$BASE^{commit}" >/dev/null || {
  echo "identity: revision $BASE is not in this clone (shallow?); skipped" >&2; exit 77; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/flowlab-identity.XXXXXX")
cleanup() {
  git -C "$ROOT" worktree remove --force "$TMP/src" >/dev/null 2>&1 || true
  if [ "$KEEP" -eq 0 ]; then rm -rf "$TMP"; else echo "identity: kept $TMP" >&2; fi
}
trap cleanup EXIT

echo "identity: building $BASE" >&2
git -C "$ROOT" worktree add --detach -q "$TMP/src" "$BASE"
meson setup "$TMP/build" "$TMP/src" -Dbuildtype=release >/dev/null
ninja -C "$TMP/build" >/dev/null

MNIST_DIR=${FLOWLAB_MNIST_DIR:-$ROOT/../shared/data/binarized_mnist}
FIX=$ROOT/tests/identity

# run_set FLOWLAB OUT: every experiment of the set, into OUT
run_set() {
  local fl=$1 out=$2
  mkdir -p "$out"
  # isolate from the user's plugins and keep the thread count fixed
  export FLOWLAB_PLUGIN_PATH= OMP_NUM_THREADS=2
  "$fl" --quiet run "$ROOT/experiments/quickstart.ini" --out "$out/quickstart" >/dev/null
  "$fl" --quiet sample "$out/quickstart" -n 200 --seed 3 -o "$out/quickstart-samples.csv"
  "$fl" --quiet plot "$out/quickstart" >/dev/null
  "$fl" --quiet run "$ROOT/experiments/vi/u1-planar-k8.ini" --set train.steps=600 \
    --set vi.anneal_steps=200 --out "$out/vi-u1" >/dev/null
  "$fl" --quiet sample "$out/vi-u1" -n 200 --seed 3 -o "$out/vi-u1-samples.csv"
  "$fl" --quiet sweep "$FIX/density-sweep4.ini" --out "$out/sweep" --jobs 1 --threads 1 \
    >/dev/null 2>&1
  if [ "$MNIST" -eq 1 ]; then
    local d=(--set "data.dir=$MNIST_DIR")
    "$fl" --quiet run "$ROOT/experiments/iwae/1layer-iwae-k5.ini" "${d[@]}" \
      --set train.schedule=constant --set train.steps=200 --set train.eval_every=100 \
      --set eval.n=100 --set eval.k=500 --set eval.valid_n=200 --out "$out/iwae-k5" >/dev/null
    "$fl" --quiet eval "$out/iwae-k5" --k 50 >/dev/null
    "$fl" --quiet gradvar "$out/iwae-k5" --k 1,5 --draws 20 >/dev/null
    "$fl" --quiet sample "$out/iwae-k5" -n 20 --seed 3 -o "$out/iwae-k5-samples.csv"
    "$fl" --quiet run "$ROOT/experiments/iaf/short/iaf-depth2.ini" "${d[@]}" \
      --set train.epochs=0 --set train.steps=100 --set train.eval_every=50 \
      --set eval.n=100 --set eval.k=200 --set eval.valid_n=200 --out "$out/iaf2" >/dev/null
  fi
}

# Both sets run in the same folder ($TMP/out), since paths are written into
# config.ini, report.md and gradvar.json.
echo "identity: running $BASE" >&2
run_set "$TMP/build/framework/flowlab" "$TMP/out"
mv "$TMP/out" "$TMP/base"
echo "identity: running $BUILD" >&2
run_set "$BUILD/framework/flowlab" "$TMP/out"
mv "$TMP/out" "$TMP/new"

# Drops time fields; prints one "sha256  path" line per file.
digest() {
  python3 - "$1" <<'EOF'
import csv, hashlib, io, json, os, re, sys
root = sys.argv[1]
timey = re.compile(r'seconds|per_second|elapsed|date|time')
def scrub(o):
    if isinstance(o, dict):
        return {k: scrub(v) for k, v in o.items() if not timey.search(k)}
    if isinstance(o, list):
        return [scrub(v) for v in o]
    return o
for dp, dn, fn in sorted(os.walk(root)):
    dn.sort()
    for f in sorted(fn):
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)
        # report.md and .html repeat report.csv's numbers with time columns
        if f in ('provenance.json', 'log.txt') or f.endswith(('.html', '.md')):
            continue
        b = open(p, 'rb').read()
        if f.endswith('.json'):
            b = json.dumps(scrub(json.loads(b)), sort_keys=True).encode()
        elif f.endswith('.csv'):
            rows = list(csv.reader(io.StringIO(b.decode())))
            if rows:
                keep = [i for i, h in enumerate(rows[0]) if not timey.search(h)]
                b = '\n'.join(','.join(r[i] for i in keep if i < len(r)) for r in rows).encode()
        print(hashlib.sha256(b).hexdigest(), rel)
EOF
}
digest "$TMP/base" > "$TMP/base.sha256"
digest "$TMP/new" > "$TMP/new.sha256"
n=$(wc -l < "$TMP/base.sha256")
if diff "$TMP/base.sha256" "$TMP/new.sha256" >"$TMP/diff.txt"; then
  echo "identity: $n files byte-identical with $BASE (time fields excluded)"
  exit 0
fi
echo "identity: outputs differ from $BASE:" >&2
cat "$TMP/diff.txt" >&2
exit 1
