#!/usr/bin/env bash
# test_catalogue.sh - issue 13's bad-input catalogue: wrong inputs and
# faults across INI files, the command line, data files, checkpoints,
# plugins, run directories, a full disk (a small tmpfs) and kill -9 at
# random points of a run and of a sweep. Each refusal asserts the exit code
# (the README's table), that the one error line names the file and line,
# the section and key, the option, or the plugin at fault, and that nothing
# earlier is lost: every file under keep/ (a finished run, an unfinished
# one, a finished sweep, a samples file, a folder of the user's own files)
# stays byte-identical, and a refused command makes no directory. A kill -9
# followed by a resume must end byte-identical to an uninterrupted run
# (checkpoint, metrics.csv but for train_seconds, result.json but for its
# clock fields). Cases already in test_reliability.sh and test_resume.sh
# are not repeated here. Prints a count by group at the end.
# The kill points are drawn from a seed it prints; set
# FLOWLAB_CATALOGUE_SEED to repeat them. The full-disk cases need to mount
# a tmpfs (root; the script re-runs itself in a private mount namespace
# with `unshare -m` when it can) and are skipped with a reason otherwise.
# Run by meson test (FLOWLAB_EXE, FLOWLAB_TEST_DIR). See docs/reliability.md.
set -u
EXE=${FLOWLAB_EXE:?run through meson test}
TEST_DIR=${FLOWLAB_TEST_DIR:?run through meson test}
unset FLOWLAB_PLUGIN_PATH

# A private mount namespace: the tmpfs disappears with the test, whatever
# happens to it.
if [ -z "${FLOWLAB_CATALOGUE_NS:-}" ] && [ "$(id -u)" = 0 ] &&
    unshare -m --propagation private true 2>/dev/null; then
    FLOWLAB_CATALOGUE_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi

. "$(dirname "$0")/lib.sh"
RUN_OPTS=(--quiet)
cd "$TMP" || exit 1
T0=$(date +%s)

declare -A COUNT START
GROUP_ORDER=()
group() {
    GROUP=$1
    GROUP_ORDER+=("$1")
    COUNT[$1]=0
    START[$1]=$(date +%s)
    echo "== $1"
}

# Names and checksums of every file under DIR.
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r cksum); }

KEEP=$TMP/keep # earlier results: no case may change a byte under it
NEW=$TMP/new   # where a case's run would go: a refusal must not make it
WATCH=""       # a further directory the next case must leave as it was
watch() {
    WATCH=$1
    WATCH_SUM=$(tree_sum "$1")
}

# refused NAME CODE TEXT...: the last `run` exited with CODE; the first
# line on stderr is a flowlab error containing every TEXT, and the only
# line (a usage error, exit 2, may print the usage after it); keep/ and
# the watched directory are unchanged; NEW was not made.
refused() {
    local name="[$GROUP] $1" code=$2 before=$failures first
    shift 2
    COUNT[$GROUP]=$((${COUNT[$GROUP]} + 1))
    [ "$rc" = "$code" ] || fail "$name: exit code $rc, expected $code"
    first=$(head -1 "$TMP/err")
    [[ "$first" =~ ^flowlab(\ [a-z]+)?:\ error:\  ]] || fail "$name: stderr does not start with a flowlab error"
    if [ "$code" != 2 ] && [ "$(wc -l <"$TMP/err")" != 1 ]; then
        fail "$name: $(wc -l <"$TMP/err") lines on stderr, expected 1"
    fi
    for text in "$@"; do
        grep -qF -- "$text" <<<"$first" || fail "$name: the error lacks '$text'"
    done
    [ "$(tree_sum "$KEEP")" = "$KEEP_SUM" ] || fail "$name: a file under keep/ changed"
    if [ -n "$WATCH" ]; then
        [ "$(tree_sum "$WATCH")" = "$WATCH_SUM" ] || fail "$name: $WATCH changed"
        WATCH=""
    fi
    if [ -e "$NEW" ]; then
        fail "$name: the refused command made $NEW"
        rm -rf "$NEW"
    fi
    if [ "$failures" = "$before" ]; then echo "ok: $name"; fi
}

# passed NAME BEFORE: counts a case checked by hand since failures was BEFORE.
passed() {
    COUNT[$GROUP]=$((${COUNT[$GROUP]} + 1))
    [ "$(tree_sum "$KEEP")" = "$KEEP_SUM" ] || fail "[$GROUP] $1: a file under keep/ changed"
    if [ "$failures" = "$2" ]; then echo "ok: [$GROUP] $1"; fi
}

# The step of DIR's checkpoint (u64 at byte 16).
ckpt_step() { od -An -t u8 -j 16 -N 8 "$1/checkpoint.flc" 2>/dev/null | tr -d ' '; }
# metrics.csv without its last column (train_seconds, a clock).
metrics() { sed 's/,[^,]*$//' "$1/metrics.csv"; }
# result.json without its clock fields.
result() { grep -v -e '_second' -e 'seconds' "$1/result.json"; }
# same_run A B: A ended exactly as B (checkpoint bytes, metrics, results).
same_run() {
    cmp -s "$1/checkpoint.flc" "$2/checkpoint.flc" || { echo "checkpoint.flc differs"; return 1; }
    [ "$(metrics "$1")" = "$(metrics "$2")" ] || { echo "metrics.csv differs"; return 1; }
    [ "$(result "$1")" = "$(result "$2")" ] || { echo "result.json differs"; return 1; }
}

# ---- the earlier results every case must leave alone ------------------------

cat >good.ini <<'EOF'
[experiment]
name = cat
threads = 1

[data]
type = moons
test_size = 100

[flow.1]
type = affine-coupling
repeat = 2
hidden = 8

[train]
steps = 20
batch = 16
checkpoint_every = 10
eval_every = 10
EOF
cat >sweep.ini <<'EOF'
[experiment]
name = cat-sweep
threads = 1
[data]
type = moons
test_size = 100
[flow.1]
type = reverse
[train]
steps = 2
batch = 8
[sweep]
train.lr = 1e-3, 2e-3
EOF
mkdir -p "$KEEP/notes"
echo "my own notes" >"$KEEP/notes/notes.txt"
run run good.ini --out "$KEEP/prev"
[ "$rc" = 0 ] || { fail "the earlier run failed ($rc): $(cat err)"; finish catalogue; }
cp -r "$KEEP/prev" "$KEEP/open"
rm "$KEEP/open/result.json" # an unfinished run: checkpoint at step 20
run sweep sweep.ini --out "$KEEP/sweep"
[ "$rc" = 0 ] || fail "the earlier sweep failed ($rc)"
run sample "$KEEP/prev" -n 5 -o "$KEEP/samples.csv"
[ "$rc" = 0 ] || fail "the earlier sample failed ($rc)"
KEEP_SUM=$(tree_sum "$KEEP")

# ---- INI files and --set ------------------------------------------------------
group "INI"

# edit NAME SED: good.ini edited by SED, as NAME.ini
edit() { sed "$2" good.ini >"$1.ini"; }

run run nosuch.ini --out "$NEW"
refused "missing experiment file" 5 "cannot open nosuch.ini"
run run "$TMP" --out "$NEW"
refused "a directory as experiment file" 5 "cannot read $TMP: Is a directory"
printf '[experiment]\nname = a\nbogus line\n' >syn.ini
run run syn.ini --out "$NEW"
refused "a line that is no key, section or comment" 3 "syn.ini:3: syntax error"
printf 'name = a\n[experiment]\n' >nosec.ini
run run nosec.ini --out "$NEW"
refused "a key before any section" 3 "nosec.ini:1: key 'name' appears before any [section]"
edit unksec 's/^\[train\]/[trian]/'
run run unksec.ini --out "$NEW"
refused "misspelled section" 3 "unksec.ini:14: unknown section [trian]" "did you mean [train]?"
edit unkkey 's/^steps = 20/steps = 20\nstepz = 3/'
run run unkkey.ini --out "$NEW"
refused "misspelled key" 3 "unkkey.ini:16: [train] unknown key 'stepz'" "did you mean 'steps'?"
edit dup 's/^steps = 20/steps = 20\nsteps = 3/'
run run dup.ini --out "$NEW"
refused "a key set twice" 3 "dup.ini:16: [train] key 'steps' is set twice (first on line 15)"
edit badint 's/^steps = 20/steps = abc/'
run run badint.ini --out "$NEW"
refused "not an integer" 3 "badint.ini:15: [train] steps = 'abc': expected an integer"
edit range 's/^batch = 16/batch = 0/'
run run range.ini --out "$NEW"
refused "an integer out of range" 3 "range.ini:16: [train] batch = '0'" "[1, 1048576]"
edit badreal 's/^batch = 16/batch = 16\nlr = fast/'
run run badreal.ini --out "$NEW"
refused "not a number" 3 "badreal.ini:17: [train] lr = 'fast': expected a finite number"
edit neg 's/^test_size = 100/test_size = 100\nnoise = -1/'
run run neg.ini --out "$NEW"
refused "a real out of range" 3 "neg.ini:8: [data] noise = '-1'"
edit list 's/^hidden = 8/hidden = 8,x/'
run run list.ini --out "$NEW"
refused "a bad integer list" 3 "list.ini:12: [flow.1] hidden = '8,x'"
edit enum 's/^hidden = 8/hidden = 8\nactivation = sigmoid/'
run run enum.ini --out "$NEW"
refused "a value outside an enumeration" 3 "enum.ini:13: [flow.1] activation = 'sigmoid'" "relu,tanh,elu,softplus"
edit bool 's/^hidden = 8/hidden = 8\nzero_init = perhaps/'
run run bool.ini --out "$NEW"
refused "not a boolean" 3 "bool.ini:13: [flow.1] zero_init = 'perhaps': expected true or false"
edit secname 's/^\[train\]/[Train]/'
run run secname.ini --out "$NEW"
refused "a section name in capitals" 3 "secname.ini:" "bad section name [Train]"
: >empty.ini
run run empty.ini --out "$NEW"
refused "an empty file" 3 "empty.ini: [data] missing required key 'type'"
printf '[experiment]\nname = a\n[data]\ntype = csv\n[flow.1]\ntype = reverse\n' >req.ini
run run req.ini --out "$NEW"
refused "a required key of a plugin's section missing" 3 "req.ini:3: [data] missing required key 'path'"
edit nodata 's/^type = moons/type = nosuch/'
run run nodata.ini --out "$NEW"
refused "an unknown data set" 4 "nodata.ini:6: [data] type = 'nosuch': no such data set"
edit noflow 's/^type = affine-coupling/type = nosuchflow/'
run run noflow.ini --out "$NEW"
refused "an unknown flow" 4 "noflow.ini:10: [flow.1] type = 'nosuchflow': no such flow"
run run good.ini --out "$NEW" --set train.nosuch=1
refused "--set of an unknown key" 3 "--set train.nosuch: [train] unknown key 'nosuch'"
run run good.ini --out "$NEW" --set train.steps
refused "--set without a value" 3 "--set train.steps: expected SECTION.KEY=VALUE"
run run good.ini --out "$NEW" --set train.lr=fast
refused "--set of a bad value" 3 "--set train.lr: [train] lr = 'fast'"
run run sweep.ini --out "$NEW"
refused "a sweep file given to run" 3 "sweep.ini:12: [sweep]: this file describes a sweep"
printf '[experiment]\nname = s\n[sweep]\nbogus\n' >badsweep.ini
run sweep badsweep.ini --out "$NEW"
refused "a [sweep] line without '='" 3 "badsweep.ini:4: [sweep] expected 'SECTION.KEY = VALUE"
{ cat sweep.ini; printf '[%s]\nk = 1\n' "$(printf 'f%.0s' $(seq 60))"; } >longsec.ini
run sweep longsec.ini --out "$NEW" --dry-run
refused "a sweep file's section name inih would cut" 3 "longsec.ini:14: section name is 60 characters long"
run sweep sweep.ini --out "$NEW" --set train.lr=0.1
refused "--set of a swept key" 3 "--set train.lr=0.1: train.lr is swept (sweep.ini:13)"

# ---- the command line ----------------------------------------------------------
group "command line"

# no command: the usage, on stderr, and exit 2
before=$failures
run
[ "$rc" = 2 ] || fail "no command: exit code $rc, expected 2"
grep -q '^usage: flowlab ' err || fail "no command: no usage on stderr"
[ -s out ] && fail "no command: the usage went to stdout"
passed "no command" "$before"
run frobnicate
refused "an unknown command" 2 "unknown command 'frobnicate'"
run run
refused "run without an experiment" 2 "no experiment file given"
run run good.ini --bogus
refused "an unknown option" 2 "unexpected argument '--bogus'"
run run good.ini --out
refused "--out without its value" 2 "--out needs a value"
run run good.ini --resume
refused "--resume without --out" 2 "--resume"
run sample "$KEEP/prev"
refused "sample without -n" 2 "need RUN_DIR and -n N"
run sample "$KEEP/prev" -n 0
refused "sample -n 0" 2 "-n '0': expected a whole number from 1 to"
run sample "$KEEP/prev" -n 3x
refused "sample -n 3x" 2 "-n '3x'"
run eval "$KEEP/prev" --batch 0
refused "eval --batch 0" 2 "--batch"
run eval "$KEEP/prev" --k 0
refused "eval --k 0" 2 "--k expects an integer in [1,"
run gradvar "$KEEP/prev" --n -3
refused "gradvar --n -3" 2 "--n"
run sweep sweep.ini --out "$NEW" --jobs 0
refused "sweep --jobs 0" 2 "--jobs '0'"
run --plugin
refused "--plugin without its path" 2 "--plugin needs a PATH"
run check --flow nosuch
refused "check of an unknown flow" 4 "no flow matched --flow nosuch"

# ---- data files ------------------------------------------------------------------
group "data files"

# csv_ini NAME FILE [KEY = VALUE lines]: good.ini reading FILE through csv
csv_ini() {
    local name=$1 file=$2
    shift 2
    sed "s|^type = moons|type = csv\npath = $file$(printf '\\n%s' "$@")|; /^test_size/d" good.ini >"$name.ini"
}
printf 'x,y\n' >hdr.csv
csv_ini hdr hdr.csv
run run hdr.ini --out "$NEW"
refused "CSV with a header and no rows" 5 "hdr.ini:5: [data] csv: $PWD/hdr.csv: no data rows"
printf 'x,y\n1,2\n3,inf\n' >inf.csv
csv_ini inf inf.csv
run run inf.ini --out "$NEW"
refused "CSV with 'inf'" 5 "inf.csv:3: field 2 is not a number"
printf 'x,y\n1,2\n3\n' >few.csv
csv_ini few few.csv
run run few.ini --out "$NEW"
refused "CSV row with too few fields" 5 "few.csv:3: 1 fields, expected 2 like the first row"
csv_ini nofile nofile.csv
run run nofile.ini --out "$NEW"
refused "CSV file missing" 5 "nofile.ini:5: [data] csv: cannot open $PWD/nofile.csv"
awk 'BEGIN { srand(3); print "x,y"; for (i = 0; i < 300; i++) printf("%.5f,%.5f\n", rand(), rand()) }' >ok.csv
printf '1,2,3\n4,5,6\n' >three.csv
csv_ini cols ok.csv "test_path = three.csv"
run run cols.ini --out "$NEW"
refused "CSV test file with another column count" 5 "three.csv has 3 columns, the training file 2"
csv_ini frac ok.csv "valid_fraction = 0.5" "test_fraction = 0.5"
run run frac.ini --out "$NEW"
refused "CSV held-out fractions leaving no training rows" 3 "ok.csv: 300 rows leave none for training"
# a nearly constant column: 1e10 lies 1e41 of its standard deviations away
# (in the double build 1e200 lies 1e351 away), past fl_real
tiny=1e-30 far=1e10
[ "${FLOWLAB_REAL:-float}" = double ] && tiny=1e-150 far=1e200
awk -v t="$tiny" 'BEGIN { for (i = 0; i < 100; i++) printf("%d,%s\n", i, i == 7 ? t : "0") }' >flat.csv
printf 'x,y\n5,%s\n' "$far" >far.csv
csv_ini flat flat.csv "test_path = far.csv" "valid_fraction = 0"
run run flat.ini --out "$NEW"
refused "CSV value that overflows once standardised" 5 "far.csv:2: field 2 (${far/e/e+}) standardises to" \
    "the training rows' column 2"
# amat and idx images, for a tiny VAE
row16() { printf '0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1\n'; }
for i in $(seq 40); do row16; done >a.amat
{ row16; row16; row16; echo "0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0"; } >val.amat
{ row16; echo "0 1 0"; } >count.amat
{ gzip -c a.amat; echo junkjunk; } >glued.amat.gz
vae_ini() { # NAME TRAIN [TYPE KEY]: a 4x4-image VAE on TRAIN
    cat >"$1.ini" <<EOF
[experiment]
task = vae
threads = 1
[data]
type = ${3:-amat}
${4:-train} = $2
$([ "${3:-amat}" = amat ] && printf 'test = a.amat\nheight = 4\nwidth = 4')
[encoder]
latent = 2
hidden = 4
[decoder]
hidden = 4
[train]
steps = 2
batch = 2
[eval]
k = 2
EOF
}
vae_ini val val.amat
run run val.ini --out "$NEW"
refused "amat value that is not 0 or 1" 5 "val.ini:4: [data] amat: $PWD/val.amat: line 4: value 2 is '2'"
vae_ini count count.amat
run run count.ini --out "$NEW"
refused "amat line of the wrong length" 5 "count.amat: line 2: 3 values, expected 16"
vae_ini glued glued.amat.gz
run run glued.ini --out "$NEW"
refused "amat.gz with bytes after the compressed data" 5 "glued.amat.gz: 9 bytes after the end"
printf 'garbage' >magic.idx
vae_ini magic magic.idx idx train_images
run run magic.ini --out "$NEW"
refused "idx with a wrong magic number" 5 "magic.idx: magic number 0x67617262"
{ printf '\0\0\x08\x03\0\0\0\x0a\0\0\0\x04\0\0\0\x04'; head -c 80 /dev/zero; } >short.idx
vae_ini short short.idx idx train_images
run run short.ini --out "$NEW"
refused "idx shorter than its header says" 5 "short.idx: truncated: 80 bytes of pixels, expected 160"

# ---- checkpoints -----------------------------------------------------------------
group "checkpoints"

# damaged NAME: a copy of the unfinished run, as ck/NAME, watched
damaged() {
    rm -rf "ck/$1"
    mkdir -p ck
    cp -r "$KEEP/open" "ck/$1"
}
# flip DIR OFFSET: inverts one byte of DIR/checkpoint.flc
flip() { printf "$(printf '\\%03o' $((0x$(od -An -tx1 -j "$2" -N1 "$1/checkpoint.flc" | tr -d ' ') ^ 255)))" |
    dd of="$1/checkpoint.flc" bs=1 seek="$2" conv=notrunc status=none; }

damaged cut
head -c 100 "$KEEP/open/checkpoint.flc" >ck/cut/checkpoint.flc
watch ck/cut
run run good.ini --out ck/cut --resume
refused "resume from a truncated checkpoint" 5 "ck/cut/checkpoint.flc: checkpoint is corrupt (checksum mismatch"
watch ck/cut
run sample ck/cut -n 2
refused "sample from a truncated checkpoint" 5 "ck/cut/checkpoint.flc: checkpoint is corrupt"
damaged flip
flip ck/flip 200
watch ck/flip
run run good.ini --out ck/flip --resume
refused "resume from a checkpoint with a damaged byte" 5 "ck/flip/checkpoint.flc: checkpoint is corrupt (checksum mismatch"
watch ck/flip
run sample ck/flip -n 2
refused "sample from a checkpoint with a damaged byte" 5 "ck/flip/checkpoint.flc: checkpoint is corrupt"
watch ck/flip
run eval ck/flip --k 2
refused "eval of a checkpoint with a damaged byte" 5 "ck/flip/checkpoint.flc: checkpoint is corrupt"
damaged empty
: >ck/empty/checkpoint.flc
watch ck/empty
run run good.ini --out ck/empty --resume
refused "resume from an empty checkpoint" 5 "ck/empty/checkpoint.flc: not a flowlab checkpoint"
damaged magic
printf 'XXXX' | dd of=ck/magic/checkpoint.flc conv=notrunc status=none
watch ck/magic
run run good.ini --out ck/magic --resume
refused "resume from a checkpoint with a wrong magic" 5 "ck/magic/checkpoint.flc: not a flowlab checkpoint"
damaged version
printf '\143' | dd of=ck/version/checkpoint.flc bs=1 seek=8 conv=notrunc status=none
watch ck/version
run sample ck/version -n 2
refused "sample from a checkpoint of format version 99" 5 "ck/version/checkpoint.flc: checkpoint format version 99"
damaged padded
echo junk >>ck/padded/checkpoint.flc
watch ck/padded
run run good.ini --out ck/padded --resume
refused "resume from a checkpoint with bytes appended" 5 "ck/padded/checkpoint.flc: checkpoint is corrupt"
damaged dir
rm ck/dir/checkpoint.flc
mkdir ck/dir/checkpoint.flc
watch ck/dir
run run good.ini --out ck/dir --resume
refused "a checkpoint that is a directory" 5 "ck/dir/checkpoint.flc: Is a directory"
damaged missing
rm ck/missing/checkpoint.flc
watch ck/missing
run sample ck/missing -n 2
refused "sample from a run without its checkpoint" 5 "cannot open ck/missing/checkpoint.flc"
sed 's/^hidden = 8/hidden = 16/' good.ini >wide.ini
run run wide.ini --out wide
damaged foreign
cp wide/checkpoint.flc ck/foreign/checkpoint.flc
watch ck/foreign
run sample ck/foreign -n 2
refused "sample from another model's checkpoint" 5 "ck/foreign/checkpoint.flc: checkpoint" \
    "different configuration"
damaged model
watch ck/model
run run good.ini --out ck/model --resume --set flow.1.hidden=16
refused "resume with a wider model" 3 "ck/model/config.ini: [flow.1] hidden = 8 in the run, 16 in this experiment"

# ---- plugins ---------------------------------------------------------------------
group "plugins"

echo "not a plugin" >text.so
run --plugin /nonexistent/p.so plugins
refused "--plugin of a missing file" 4 "plugin /nonexistent/p.so refused: no such file"
run --plugin text.so plugins
refused "--plugin of a text file" 4 "plugin text.so refused: cannot load:"
run --plugin "$TEST_DIR/bad_noentry.so" plugins
refused "--plugin without an entry point" 4 "bad_noentry.so refused: no 'flowlab_plugin_entry' symbol"
run --plugin "$TEST_DIR/bad_major.so" plugins
refused "--plugin of another ABI" 4 "bad_major.so refused: built for ABI 2."
run --plugin "$TEST_DIR/bad_realsize.so" plugins
refused "--plugin built for another fl_real" 4 "bad_realsize.so refused: built with sizeof(fl_real)"
run --plugin "$TEST_DIR/bad_schema.so" plugins
refused "--plugin with a bad schema default" 4 "bad_schema.so refused: flow 'bad-schema': schema key 'n'"
run --plugin "$TEST_DIR/dup_name.so" plugins
refused "--plugin of a name already taken" 4 "dup_name.so refused: flow 'affine-coupling' is already registered"
run --plugin "$TEST_DIR/dup_twice.so" plugins
refused "--plugin registering a name twice" 4 "dup_twice.so refused: flow 'dup-twice' is registered twice"
run --plugin "$TEST_DIR/bad_major.so" run good.ini --out "$NEW"
refused "a run with a refused --plugin" 4 "bad_major.so refused"
# a bad file on the path is refused with a warning naming it; the run goes on
before=$failures
mkdir -p pl && cp text.so pl/junk.so && ln -sf "$TEST_DIR/bad_noentry.so" pl/
FLOWLAB_PLUGIN_PATH=$TMP/pl run run good.ini --out path-run
[ "$rc" = 0 ] && [ -f path-run/result.json ] || fail "a run with bad plugins on the path failed ($rc)"
grep -q "warning: plugin $TMP/pl/junk.so refused" err || fail "no warning names junk.so: $(cat err)"
grep -q "warning: plugin $TMP/pl/bad_noentry.so refused" err || fail "no warning names bad_noentry.so"
passed "bad plugins on FLOWLAB_PLUGIN_PATH are named and skipped" "$before"

# ---- run directories -------------------------------------------------------------
group "run directories"

run run good.ini --out "$KEEP/prev"
refused "run into a finished run" 5 "$KEEP/prev: run directory exists and is not empty"
run run good.ini --out "$KEEP/notes"
refused "run into a folder of the user's files" 5 "$KEEP/notes: run directory exists and is not empty"
run run good.ini --out "$KEEP/notes" --resume
refused "resume in a folder of the user's files" 5 "$KEEP/notes: has no checkpoint.flc" "notes.txt"
run run good.ini --out "$KEEP/samples.csv"
refused "run into a file" 5 "$KEEP/samples.csv: exists and is not a directory"
run run good.ini --out "$KEEP/samples.csv/sub"
refused "run under a file" 5 "cannot create directory $KEEP/samples.csv/sub: Not a directory"
run sweep sweep.ini --out "$KEEP/prev"
refused "sweep into a run directory" 5 "$KEEP/prev: exists, is not empty and is not a sweep directory"
run sweep sweep.ini --out "$KEEP/notes" --dry-run
refused "sweep --dry-run into a folder of the user's files" 5 "$KEEP/notes: exists, is not empty"
run sample "$KEEP/notes" -n 2
refused "sample from a folder that is no run" 5 "$KEEP/notes: not a run directory (no readable config.ini"
run eval "$KEEP/notes"
refused "eval of a folder that is no run" 5 "$KEEP/notes: not a run directory"
run report "$KEEP/prev"
refused "report of a run directory" 5 "$KEEP/prev: not a sweep directory"
run plot nosuchdir
refused "plot of a missing directory" 5 "nosuchdir"
cp -r "$KEEP/prev" badcfg
echo '[experiment' >badcfg/config.ini
watch badcfg
run sample badcfg -n 2
refused "sample from a run whose config.ini is damaged" 3 "badcfg/config.ini:1: syntax error"
watch ck/flip
run sample ck/flip -n 5 -o "$KEEP/samples.csv"
refused "a failed sample -o leaves the earlier file" 5 "ck/flip/checkpoint.flc"
run sample "$KEEP/prev" -n 2 -o /nonexistent/dir/s.csv
refused "sample -o into a missing folder" 5 "cannot write /nonexistent/dir/s.csv"

# ---- a full disk (a small tmpfs) ---------------------------------------------------
group "full disk"

FD=$TMP/fd
mkdir -p "$FD"
if mount -t tmpfs -o size=2m tmpfs "$FD" 2>mount.err; then
    # without a private namespace, unmount before lib.sh removes TMP
    [ -n "${FLOWLAB_CATALOGUE_NS:-}" ] || trap 'umount "$FD" 2>/dev/null; rm -rf "$TMP"' EXIT
    # fill_to KB: a filler file leaves about KB kilobytes free on FD
    fill_to() {
        rm -f "$FD/fill"
        local avail
        avail=$(df -k --output=avail "$FD" | tail -1 | tr -d ' ')
        [ "$avail" -gt "$1" ] && dd if=/dev/zero of="$FD/fill" bs=1k count=$((avail - $1)) status=none 2>/dev/null
        true
    }
    # an unfinished run of a model whose checkpoint (about 100 kB) does not
    # fit in what is left, while config.ini and metrics.csv do
    sed 's/^hidden = 8/hidden = 64,64/' good.ini >big.ini
    run run big.ini --out bigdone --set train.steps=20
    [ "$rc" = 0 ] || fail "the big run failed ($rc)"
    cp -r bigdone "$FD/open"
    rm "$FD/open/result.json"
    ck_size=$(($(stat -c %s "$FD/open/checkpoint.flc") / 1024))
    mkdir -p "$FD/earlier" && cp "$KEEP/samples.csv" "$FD/earlier/"
    fd_sum=$(tree_sum "$FD/open")

    fill_to 0
    run run good.ini --out "$FD/new"
    refused "a run on a full disk" 5 "cannot write $FD/new/config.ini: No space left on device"
    rm -rf "$FD/new"
    watch "$FD/earlier"
    run sample "$KEEP/prev" -n 100000 -o "$FD/earlier/samples.csv"
    refused "sample -o on a full disk leaves the earlier file" 5 "cannot write $FD/earlier/samples.csv: No space left on device"
    run sweep sweep.ini --out "$FD/sw"
    refused "a sweep on a full disk" 5 "$FD/sw/sweep.ini: No space left on device"
    rm -rf "$FD/sw"

    fill_to $((ck_size / 2))
    before=$failures
    run run big.ini --out "$FD/open" --set train.steps=40 --resume
    [ "$rc" = 5 ] || fail "resume with no room for the checkpoint: exit $rc, expected 5"
    grep -q "cannot write $FD/open/checkpoint.flc.*No space left on device" err ||
        fail "resume with no room for the checkpoint: the error does not name checkpoint.flc: $(cat err)"
    cmp -s "$FD/open/checkpoint.flc" bigdone/checkpoint.flc || fail "the last checkpoint changed"
    [ -e "$FD/open/result.json" ] && fail "a run that could not save wrote result.json"
    passed "a resume with no room for its checkpoint keeps the last one" "$before"
    # with room again, the resume ends as an uninterrupted 40-step run
    before=$failures
    rm -f "$FD/fill"
    run run big.ini --out "$FD/open" --set train.steps=40 --resume
    [ "$rc" = 0 ] || fail "resuming once there is room failed ($rc): $(cat err)"
    run run big.ini --out big40 --set train.steps=40
    why=$(same_run "$FD/open" big40) || fail "the run resumed after a full disk differs: $why"
    passed "after the disk is freed, the resume ends as an uninterrupted run" "$before"

    # a finished sweep on the disk, rerun with a new value while it is full
    run sweep sweep.ini --out "$FD/sw"
    [ "$rc" = 0 ] || fail "the sweep on the tmpfs failed ($rc)"
    sw_sum=$(cd "$FD/sw" && tree_sum train.lr=1e-3 && tree_sum train.lr=2e-3)
    sed 's/^train.lr = 1e-3, 2e-3/train.lr = 1e-3, 2e-3, 3e-3/' sweep.ini >sweep3.ini
    fill_to 0
    before=$failures
    run sweep sweep3.ini --out "$FD/sw"
    [ "$rc" != 0 ] || fail "a sweep whose new cell meets a full disk exited 0"
    grep -q "No space left on device" err || fail "the sweep's error does not say the disk is full: $(cat err)"
    grep -q "$FD/sw" err || fail "the sweep's error names no file under $FD/sw: $(cat err)"
    [ "$(cd "$FD/sw" && tree_sum train.lr=1e-3 && tree_sum train.lr=2e-3)" = "$sw_sum" ] ||
        fail "the sweep's finished cells changed on a full disk"
    [ -e "$FD/sw/train.lr=3e-3/result.json" ] && fail "the new cell claims to be finished"
    passed "a sweep meeting a full disk keeps its finished cells" "$before"
    rm -f "$FD/fill"
    umount "$FD" 2>/dev/null
else
    echo "skip: full disk: cannot mount a tmpfs here ($(head -1 mount.err)); 6 cases not run"
fi

# ---- kill -9 at random points ------------------------------------------------------
group "kill -9"

SEED=${FLOWLAB_CATALOGUE_SEED:-$(($(date +%s) % 100000))}
echo "kill -9 points drawn with seed $SEED (FLOWLAB_CATALOGUE_SEED=$SEED repeats them)"
cat >kill.ini <<'EOF'
[experiment]
name = kill
threads = 1
[data]
type = moons
test_size = 300
[flow.1]
type = affine-coupling
repeat = 4
hidden = 32,32
[train]
steps = 3000
batch = 64
checkpoint_every = 100
eval_every = 300
EOF
# points N MAX SALT: N delays in (0.02, MAX) seconds, from the seed
points() { awk -v s="$SEED" -v n="$1" -v m="$2" -v salt="$3" \
    'BEGIN { srand(s * 7 + salt); for (i = 0; i < n; i++) printf("%.2f\n", 0.02 + rand() * m) }'; }
# seconds since the epoch, to the hundredth
now() { date +%s.%N | cut -c1-14; }

t=$(now)
run run kill.ini --out kref
span=$(awk -v a="$t" -v b="$(now)" 'BEGIN { print b - a }')
[ "$rc" = 0 ] || fail "the uninterrupted run failed ($rc)"
n=0
for d in $(points 5 "$span" 1); do
    n=$((n + 1))
    before=$failures
    rm -rf kcut
    "$EXE" --quiet run kill.ini --out kcut >/dev/null 2>&1 &
    pid=$!
    sleep "$d"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    at="step $(ckpt_step kcut)"
    [ "$at" = "step " ] && at="no checkpoint yet"
    [ -d kcut ] || at="before its directory"
    [ -e kcut/result.json ] && at="after it finished"
    run run kill.ini --out kcut --resume
    if [ -e kcut/result.json ] && [ "$at" = "after it finished" ]; then
        [ "$rc" = 5 ] || fail "resuming a finished run: exit $rc"
    else
        [ "$rc" = 0 ] || fail "kill at ${d}s ($at): the resume exited $rc: $(cat err)"
    fi
    why=$(same_run kcut kref) || fail "kill at ${d}s ($at), then --resume: $why"
    passed "run killed at ${d}s ($at), resumed: identical" "$before"
done

# a sweep: the whole process group (the sweep and its cell) is killed;
# running the sweep again finishes it
sed -e 's/^steps = 3000/steps = 1000/' -e 's/^name = kill/name = ksweep/' kill.ini >ksweep.ini
printf '[sweep]\ntrain.lr = 1e-3, 3e-3\n' >>ksweep.ini
t=$(now)
run sweep ksweep.ini --out sref
span=$(awk -v a="$t" -v b="$(now)" 'BEGIN { print b - a }')
[ "$rc" = 0 ] || fail "the uninterrupted sweep failed ($rc)"
for d in $(points 5 "$span" 2); do
    before=$failures
    rm -rf scut
    setsid "$EXE" --quiet sweep ksweep.ini --out scut >/dev/null 2>&1 &
    pid=$!
    sleep "$d"
    pgid=$(awk '{ print $5 }' "/proc/$pid/stat" 2>/dev/null)
    kill -9 -- "-${pgid:-$pid}" 2>/dev/null || kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    sleep 0.05 # the cell, killed with its group, is reaped by init
    at=$(shopt -s nullglob; cd scut 2>/dev/null && for c in train.lr=*; do
        [ -e "$c/result.json" ] && echo -n "$c done; " || echo -n "$c at step $(ckpt_step "$c" || true); "
    done)
    run sweep ksweep.ini --out scut
    [ "$rc" = 0 ] || fail "sweep killed at ${d}s: running it again exited $rc: $(tail -3 err)"
    for c in train.lr=1e-3 train.lr=3e-3; do
        why=$(same_run "scut/$c" "sref/$c") || fail "sweep killed at ${d}s ($at), cell $c: $why"
    done
    passed "sweep killed at ${d}s (${at:-nothing yet}), run again: identical" "$before"
done

# ---- the count by group --------------------------------------------------------------
total=0
echo "catalogue: cases by group (seconds from its start to the next group's)"
prev=""
for g in "${GROUP_ORDER[@]}" end; do
    [ "$g" = end ] && START[end]=$(date +%s)
    [ -n "$prev" ] && printf '  %-16s %3d  (%d s)\n' "$prev" "${COUNT[$prev]}" $((${START[$g]} - ${START[$prev]}))
    [ "$g" = end ] || total=$((total + ${COUNT[$g]}))
    prev=$g
done
printf '  %-16s %3d  (%d s)\n' "total" "$total" $(($(date +%s) - T0))
[ "$total" -ge 60 ] || fail "the catalogue has $total cases, fewer than 60"
finish catalogue
