#!/usr/bin/env bash
# install.sh - `meson install --destdir` into a temporary root, then from
# another folder: the installed flowlab finds its plugins and runs the
# quickstart; the man page and the bash completion are there and say what
# the program does; pkg-config gives what an out-of-tree plugin needs, one
# built with it alone and put into the plugindir is loaded and checked.
set -eu
BUILD=${FLOWLAB_TEST_BUILD_ROOT:?run through meson test}
SRC=${FLOWLAB_SOURCE_ROOT:?run through meson test}
unset FLOWLAB_PLUGIN_PATH FLOWLAB_DATA

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
die() {
    echo "FAIL: $*"
    exit 1
}
ROOT=$TMP/root
meson install -C "$BUILD" --destdir "$ROOT" --no-rebuild --quiet >"$TMP/install.log" 2>&1 || {
    cat "$TMP/install.log"
    die "meson install --destdir failed"
}
prefix=$(meson introspect "$BUILD" --buildoptions |
    python3 -c 'import json,sys; print({o["name"]: o["value"] for o in json.load(sys.stdin)}["prefix"])')
P=$ROOT$prefix
FL=$(find "$P" -path '*/bin/flowlab' -type f | head -1)
[ -x "$FL" ] || die "no installed bin/flowlab under $P"
for f in include/flowlab/flowlab.h include/flowlab/expr.h share/flowlab/experiments/quickstart.ini \
         share/doc/flowlab/README.md share/doc/flowlab/docs/install.md share/man/man1/flowlab.1 \
         share/bash-completion/completions/flowlab; do
    [ -f "$P/$f" ] || die "not installed: $prefix/$f"
done
n_plugins=$(find "$P" -path '*/flowlab/plugins/*.so' | wc -l)
[ "$n_plugins" -ge 20 ] || die "only $n_plugins plugins installed"
echo "ok: installed under $P ($n_plugins plugins)"

# From another folder, with the build tree out of sight: the plugins are
# those beside the installed binary.
mkdir "$TMP/elsewhere"
cd "$TMP/elsewhere"
"$FL" plugins >plugins.txt 2>&1 || { cat plugins.txt; die "installed flowlab plugins failed"; }
grep -q "$ROOT.*/flowlab/plugins/.*coupling.so" plugins.txt || {
    cat plugins.txt
    die "the installed flowlab did not load the installed plugins"
}
grep -q "$BUILD/plugins" plugins.txt && die "the installed flowlab loaded the build tree's plugins"
"$FL" --quiet run "$P/share/flowlab/experiments/quickstart.ini" --set train.steps=100 \
    --set train.eval_every=50 --out q >run.log 2>&1 || { cat run.log; die "installed quickstart failed"; }
[ -f q/result.json ] || die "the installed quickstart wrote no result.json"
grep -q '"path": "'"$ROOT" q/provenance.json || die "provenance.json does not name the installed plugins"
echo "ok: the installed flowlab runs the quickstart from $TMP/elsewhere"

# The man page: every command's --help text, and valid roff.
MAN=$P/share/man/man1/flowlab.1
for c in run sweep report plugins sample plot eval gradvar check data; do
    grep -q "^\.SS $c\$" "$MAN" || die "flowlab.1 has no section for $c"
done
grep -q 'usage: flowlab sample RUN_DIR' "$MAN" || die "flowlab.1 lacks sample's usage line"
if command -v man >/dev/null 2>&1; then
    warn=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$MAN" 2>&1 >/dev/null || true)
    [ -z "$warn" ] || die "man reports: $warn"
    echo "ok: flowlab.1 formats without warnings"
fi

# bash completion: commands, options, sections, keys and component types.
comp() { # comp WORD... : the completions of the last word
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _flowlab
             printf "%s\n" "${COMPREPLY[@]}"' _ "$P/share/bash-completion/completions/flowlab" "$@"
}
comp flowlab ru | grep -qx run || die "completion: 'ru' does not give run"
comp flowlab da | grep -qx data || die "completion: 'da' does not give data"
comp flowlab sample RUN --se | grep -qx -- --seed || die "completion: sample --se does not give --seed"
comp flowlab run x.ini --set tr | grep -qx 'train\.' || die "completion: --set tr does not give train."
comp flowlab run x.ini --set train.st | grep -qx 'train\.steps=' || die "completion: no train.steps="
comp flowlab run x.ini --set flow.2.hid | grep -qx 'flow\.2\.hidden=' || die "completion: no flow.2.hidden="
comp flowlab run x.ini --set flow.1.type=affine-c | grep -qx 'affine-coupling' ||
    die "completion: no flow type affine-coupling"
comp flowlab run x.ini --set data.type=fash | grep -qx 'fashion-mnist' || die "completion: no data set"
echo "ok: bash completion of commands, options, sections, keys and types"

# pkg-config: the include path and fl_real of this build, the plugindir.
PC=$(dirname "$(find "$P" -name flowlab.pc | head -1)")
export PKG_CONFIG_PATH=$PC PKG_CONFIG_SYSROOT_DIR=$ROOT
cflags=$(pkg-config --cflags flowlab)
case " $cflags " in *" -I$P/include "*) ;; *) die "pkg-config --cflags flowlab: '$cflags'" ;; esac
if [ "${FLOWLAB_REAL:-float}" = double ]; then
    case " $cflags " in *" -DFL_REAL_DOUBLE "*) ;; *) die "--cflags lacks -DFL_REAL_DOUBLE: $cflags" ;; esac
else
    case " $cflags " in *FL_REAL_DOUBLE*) die "a float build's --cflags has $cflags" ;; esac
fi
[ "$(pkg-config --variable=fl_real flowlab)" = "${FLOWLAB_REAL:-float}" ] || die "fl_real variable"
# (pkg-config puts the sysroot, the --destdir, before it too)
plugindir=$(pkg-config --variable=plugindir flowlab)
plugindir=${plugindir#"$ROOT"}
case $plugindir in "$prefix"/*/flowlab/plugins) ;; *) die "plugindir '$plugindir'" ;; esac
# an out-of-tree plugin, compiled with nothing but what pkg-config says
cp "$SRC/tests/plugins/good_flow.c" "$TMP/elsewhere/"
mkdir -p "$ROOT$plugindir/mine"
cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden $cflags good_flow.c \
    -o "$ROOT$plugindir/mine/shift.so" || die "cc with pkg-config --cflags flowlab failed"
"$FL" plugins shift >shift.txt 2>&1 || { cat shift.txt; die "the plugindir's plugin was not loaded"; }
grep -q "$plugindir/mine/shift.so" shift.txt || die "flow shift not from the plugindir: $(cat shift.txt)"
"$FL" check --flow shift >check.txt 2>&1 || { cat check.txt; die "flowlab check --flow shift failed"; }
grep -q ' 0 failed$' check.txt || die "check reported failures"
echo "ok: a plugin built with pkg-config --cflags flowlab, put into its plugindir, loads and passes check"
