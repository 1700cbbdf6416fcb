#!/usr/bin/env bash
# test_diverge.sh - failure is not reported as success (issue 13): a
# diverging run (the quickstart and a small VAE at lr = 10), a flow that
# yields NaN and a sample from a checkpoint of NaN parameters each exit 1
# with one error line naming the step (and the layer), write no
# result.json, and leave the last good checkpoint. Run by meson test.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
TEST_DIR=${FLOWLAB_TEST_DIR:?run through meson test}
unset FLOWLAB_PLUGIN_PATH
QS="$SRC/experiments/quickstart.ini"

. "$(dirname "$0")/lib.sh"
RUN_OPTS=(--quiet)

# The step of the checkpoint in DIR (u64 at byte 16).
ckpt_step() {
    python3 -c 'import struct,sys; print(struct.unpack_from("<Q", open(sys.argv[1], "rb").read(), 16)[0])' "$1/checkpoint.flc"
}

# ---- the quickstart at lr = 10 ----
run run "$QS" --out "$TMP/qs10" --set train.lr=10 --set data.test_size=200
expect_error "the quickstart at lr = 10 stops as diverged" 1 "step " "the training loss diverged"
[ -e "$TMP/qs10/result.json" ] && fail "the diverged run wrote result.json"

# ---- a small VAE at lr = 10 (binary 6x6 bars, no MNIST) ----
awk 'BEGIN { srand(5); for (j = 0; j < 36; j++) printf(j ? ",p%d" : "p%d", j); print "";
             for (i = 0; i < 300; i++) { h = rand() < 0.5;
               for (r = 0; r < 6; r++) { on[r] = rand() < 0.3 }
               for (p = 0; p < 36; p++) printf(p ? ",%d" : "%d", on[h ? int(p / 6) : p % 6]);
               print "" } }' >"$TMP/bars.csv"
cat >"$TMP/vae.ini" <<EOF
[experiment]
task = vae
seed = 2
[data]
type = csv
path = $TMP/bars.csv
standardize = false
[encoder]
latent = 4
hidden = 32
[decoder]
hidden = 32
[likelihood]
type = bernoulli
[estimator]
type = iwae
k = 3
[train]
batch = 20
steps = 300
checkpoint_every = 50
[eval]
k = 20
valid_k = 5
EOF
run run "$TMP/vae.ini" --out "$TMP/vae10" --set train.lr=10
expect_error "a VAE at lr = 10 stops" 1 "step "
[ -e "$TMP/vae10/result.json" ] && fail "the diverged VAE wrote result.json"
run run "$TMP/vae.ini" --out "$TMP/vae-ok" --set train.steps=100
[ "$rc" = 0 ] && [ -f "$TMP/vae-ok/result.json" ] && echo "ok: the VAE at its lr finishes" ||
    fail "the VAE at its own lr failed ($rc)"

# ---- a flow yielding NaN: the layer and the step; the checkpoint before ----
run --plugin "$TEST_DIR/nan_flow.so" run "$QS" --out "$TMP/nan" --set train.steps=20 \
    --set train.checkpoint_every=2 --set data.test_size=200 --set flow.9.type=nan-shift \
    --set flow.9.train_call=5 --set flow.9.what=logdet
expect_error "a layer's NaN names the layer and the step" 1 \
    "[flow.9] nan-shift: non-finite logdet at step 5, row 17 (nan)"
[ -e "$TMP/nan/result.json" ] && fail "the failed run wrote result.json"
[ "$(ckpt_step "$TMP/nan")" = 4 ] && echo "ok: the last good checkpoint (step 4) is kept" ||
    fail "the checkpoint is at step $(ckpt_step "$TMP/nan"), not 4"

# ---- a flow that crashes the process: the last line names it ----
run --plugin "$TEST_DIR/nan_flow.so" run "$QS" --out "$TMP/crash" --set train.steps=20 \
    --set train.checkpoint_every=2 --set data.test_size=200 --set flow.9.type=nan-shift \
    --set flow.9.crash_call=5
before=$failures
[ "$rc" -ne 0 ] || fail "a crashing layer: exit 0"
grep -qF "flowlab: error: SIGSEGV (a bad memory access) in [flow.9] nan-shift forward, in nan_flow.so at step 5; the plugin crashed the process" \
    "$TMP/err" || fail "a crashing layer: no line naming the section, class, call, plugin and step: $(cat "$TMP/err")"
[ -e "$TMP/crash/result.json" ] && fail "the crashed run wrote result.json"
[ "$(ckpt_step "$TMP/crash")" = 4 ] || fail "after the crash the checkpoint is at step $(ckpt_step "$TMP/crash"), not 4"
[ "$failures" = "$before" ] && echo "ok: a layer's crash names [flow.9] nan-shift forward and step 5; checkpoint 4 kept"

# ---- sampling from a checkpoint of NaN parameters ----
run run "$QS" --out "$TMP/done" --set train.steps=20 --set data.test_size=200
[ "$rc" = 0 ] || fail "the small run failed ($rc)"
python3 - "$TMP/done/checkpoint.flc" <<'EOF'
import struct, sys, zlib
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
real = struct.unpack_from('<I', b, 12)[0]
n = struct.unpack_from('<I', b, 32)[0]
o = 40
for _ in range(n):
    ln = struct.unpack_from('<I', b, o)[0]
    o += 4 + ln + 16
# theta starts at o, the average (flags & 2) ends before the run record
# (24 bytes) and the checksum: the first value of each becomes NaN
total = struct.unpack_from('<Q', b, 24)[0]
flags = struct.unpack_from('<I', b, 36)[0]
nan = struct.pack('<f' if real == 4 else '<d', float('nan'))
b[o:o + real] = nan
if flags & 2:
    a = len(b) - 4 - 24 - total * real
    b[a:a + real] = nan
struct.pack_into('<I', b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xffffffff)
open(p, 'wb').write(b)
EOF
run sample "$TMP/done" -n 5
expect_error "sampling a checkpoint of NaN parameters is refused" 1 "$TMP/done/checkpoint.flc" \
    "is not finite" "the run diverged"
grep -qi nan "$TMP/out" && fail "sample printed nan"

finish divergence
