#!/usr/bin/env bash
# data_paths.sh - data found wherever it lives (model/datapath.h): relative
# [data] paths resolve against the experiment file's folder (and a sweep's
# cells against the sweep file's), --set ones against the working folder;
# a catalogued data set left at its default folder is found in
# FLOWLAB_DATA, then the user's data folder; `flowlab data` says where
# each is, or what is missing and where to get it; `flowlab data get`
# downloads from a server on 127.0.0.1 and keeps only verified files.
set -eu
EXE=${FLOWLAB_EXE:?run through meson test}
unset FLOWLAB_DATA FLOWLAB_EXPERIMENT_DIR FLOWLAB_DATA_MIRROR
TMP=$(mktemp -d)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
die() {
    echo "FAIL: $*"
    exit 1
}
export XDG_DATA_HOME=$TMP/xdg HOME=$TMP/home
mkdir -p "$TMP/exp/data" "$TMP/elsewhere" "$XDG_DATA_HOME" "$HOME"

# --- relative paths: the experiment file's folder -----------------------
python3 - "$TMP/exp/data/rows.csv" <<'PY'
import math, random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    f.write("x,y\n")
    for i in range(600):
        t = random.uniform(0, math.pi)
        f.write("%.5f,%.5f\n" % (math.cos(t) + random.gauss(0, 0.1), math.sin(t) + random.gauss(0, 0.1)))
PY
cat >"$TMP/exp/csv.ini" <<'EOF2'
[experiment]
name = csv
seed = 1
[data]
type = csv
path = data/rows.csv
[flow.1]
type = affine-coupling
repeat = 2
hidden = 8
[train]
steps = 20
batch = 64
eval_every = 0
EOF2
cd "$TMP/elsewhere"
"$EXE" --quiet run "$TMP/exp/csv.ini" --out r1 >log 2>&1 || { cat log; die "a relative data path from another folder"; }
grep -qx "path = $TMP/exp/data/rows.csv" r1/config.ini || die "config.ini: $(grep '^path' r1/config.ini)"
"$EXE" --quiet sample r1 -n 3 -o s.csv 2>log || { cat log; die "sample of a run with a relative data path"; }
echo "ok: [data] path = data/rows.csv resolves against the experiment file's folder"

# --set: the working folder
mkdir -p "$TMP/elsewhere/mine" && cp "$TMP/exp/data/rows.csv" "$TMP/elsewhere/mine/other.csv"
"$EXE" --quiet run "$TMP/exp/csv.ini" --set data.path=mine/other.csv --out r2 >log 2>&1 ||
    { cat log; die "--set data.path relative to the working folder"; }
grep -qx "path = $TMP/elsewhere/mine/other.csv" r2/config.ini || die "--set path: $(grep '^path' r2/config.ini)"
# a missing file is named with the folder it was looked for in
sed -i 's|^path = data/rows.csv|path = data/none.csv|' "$TMP/exp/csv.ini"
set +e
"$EXE" --quiet run "$TMP/exp/csv.ini" --out r4 2>err
rc=$?
set -e
[ "$rc" -eq 5 ] || die "missing csv: exit $rc, $(cat err)"
grep -q "$TMP/exp/data/none.csv" err || die "the missing file's message: $(cat err)"
sed -i 's|^path = data/none.csv|path = data/rows.csv|' "$TMP/exp/csv.ini"
echo "ok: --set paths resolve against the working folder; a missing file is named in full"

# a sweep's cells run DIR/base.ini: still the sweep file's folder
{ cat "$TMP/exp/csv.ini"; printf '[sweep]\nexperiment.seed = 1, 2\n'; } >"$TMP/exp/sw.ini"
"$EXE" --quiet sweep "$TMP/exp/sw.ini" --out sw --jobs 1 --threads 1 >log 2>&1 ||
    { cat log; cat sw/logs/*.txt 2>/dev/null; die "a sweep with a relative data path"; }
grep -rqx "path = $TMP/exp/data/rows.csv" sw/*/config.ini || die "the sweep's cells did not resolve the path"
echo "ok: a sweep's cells resolve relative paths against the sweep file's folder"

# --- catalogued data sets: FLOWLAB_DATA, then the user's data folder -----
# binarized-mnist of a few rows (the plugin warns about the sizes)
python3 -c "
for r in range(8): print(' '.join('1' if (i * (r + 1)) % 3 == 0 else '0' for i in range(784)))
" >"$TMP/rows.amat"
mk_bmnist() {
    mkdir -p "$1"
    for s in train valid test; do cp "$TMP/rows.amat" "$1/binarized_mnist_$s.amat"; done
}
cat >"$TMP/exp/vae.ini" <<'EOF2'
[experiment]
task = vae
seed = 1
[data]
type = binarized-mnist
[encoder]
latent = 2
hidden = 8
[decoder]
hidden = 8
[posterior]
type = gaussian-diag
[likelihood]
type = bernoulli
[estimator]
type = elbo
[train]
batch = 4
steps = 2
eval_every = 0
[eval]
k = 2
at_end = false
EOF2
# nowhere: a clear error and the list of what is needed
set +e
"$EXE" --quiet run "$TMP/exp/vae.ini" --out v0 2>err
rc=$?
set -e
[ "$rc" -eq 5 ] || die "binarized-mnist nowhere: exit $rc: $(cat err)"
grep -q "vae.ini:4: \[data\] binarized-mnist: its files" err || die "nowhere message: $(cat err)"
grep -q "$XDG_DATA_HOME/flowlab/binarized_mnist" err || die "the message does not list the user's folder"
"$EXE" data binarized-mnist >list 2>&1 || { cat list; die "flowlab data binarized-mnist"; }
grep -q '^binarized-mnist *missing' list || die "flowlab data: $(cat list)"
grep -q 'binarized_mnist_train.amat .* sha256 ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d' list ||
    die "flowlab data lacks the train file's checksum: $(cat list)"
grep -q 'from http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_train.amat' list ||
    die "flowlab data lacks the official address"
echo "ok: a missing data set: the run names the folders searched, flowlab data the files, checksums and address"

mk_bmnist "$XDG_DATA_HOME/flowlab/binarized_mnist"
"$EXE" --quiet run "$TMP/exp/vae.ini" --out v1 >log 2>&1 || { cat log; die "binarized-mnist in XDG_DATA_HOME"; }
grep -qx "dir = $XDG_DATA_HOME/flowlab/binarized_mnist" v1/config.ini || die "XDG: $(grep '^dir' v1/config.ini)"
mk_bmnist "$TMP/d2/binarized_mnist"
FLOWLAB_DATA=$TMP/d1:$TMP/d2 "$EXE" --quiet run "$TMP/exp/vae.ini" --out v2 >log 2>&1 || { cat log; die "FLOWLAB_DATA"; }
grep -qx "dir = $TMP/d2/binarized_mnist" v2/config.ini || die "FLOWLAB_DATA: $(grep '^dir' v2/config.ini)"
FLOWLAB_DATA=$TMP/d2 "$EXE" data >list 2>&1 || { cat list; die "flowlab data"; }
grep -q "^binarized-mnist *found in $TMP/d2/binarized_mnist\$" list || die "flowlab data: $(cat list)"
grep -q '^moons *drawn afresh' list || die "flowlab data lacks moons: $(cat list)"
grep -q '^csv *reads the files' list || die "flowlab data lacks csv: $(cat list)"
echo "ok: FLOWLAB_DATA before the user's data folder; flowlab data says where each set was found"

# --- flowlab data get from a server on 127.0.0.1 --------------------------
if ! "$EXE" data get fashion-mnist --to /dev/null/x 2>&1 | grep -q "without libcurl"; then
    mkdir -p "$TMP/www"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (cd "$TMP/www" && exec python3 -m http.server "$port" --bind 127.0.0.1) >"$TMP/http.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 50); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
        sleep 0.1
    done
    export FLOWLAB_DATA_MIRROR=http://127.0.0.1:$port
    # a corrupted file is refused and not kept
    for s in train valid test; do head -3 "$TMP/rows.amat" >"$TMP/www/binarized_mnist_$s.amat"; done
    set +e
    "$EXE" data get binarized-mnist --to "$TMP/got" 2>err
    rc=$?
    set -e
    [ "$rc" -eq 5 ] || die "a corrupted download: exit $rc: $(cat err)"
    grep -q "binarized_mnist_train.amat: sha256 .* is not the expected ad693b29" err || die "corrupted: $(cat err)"
    [ -e "$TMP/got/binarized_mnist_train.amat" ] && die "a corrupted download was kept"
    ls -A "$TMP/got" | grep -q . && die "a partial download was left: $(ls -A "$TMP/got")"
    echo "ok: flowlab data get refuses a file whose checksum differs and keeps nothing"
    FM=/usr/share/datasets/fashion-mnist
    if [ -r "$FM/train-images-idx3-ubyte.gz" ] && [ -r "$FM/t10k-images-idx3-ubyte.gz" ]; then
        cp "$FM/train-images-idx3-ubyte.gz" "$FM/t10k-images-idx3-ubyte.gz" "$TMP/www/"
        FLOWLAB_DATA=$TMP/fd "$EXE" data get fashion-mnist >out 2>err || { cat err; die "data get fashion-mnist"; }
        [ -f "$TMP/fd/fashion-mnist/train-images-idx3-ubyte.gz" ] || die "fashion-mnist not fetched into FLOWLAB_DATA"
        grep -q "verified" err || die "no verification line: $(cat err)"
        FLOWLAB_DATA=$TMP/fd "$EXE" data fashion-mnist >list 2>&1
        grep -q "^fashion-mnist *found in $TMP/fd/fashion-mnist" list || die "after get: $(cat list)"
        echo "ok: flowlab data get fashion-mnist from 127.0.0.1, verified, found afterwards"
    else
        echo "skip: flowlab data get of a real set (no $FM; bash scripts/get-data.sh)"
    fi
else
    echo "skip: flowlab data get (built without libcurl)"
fi
