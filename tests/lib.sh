# lib.sh - what the shell tests share (sourced by test_cli.sh,
# test_resume.sh, test_reliability.sh and test_diverge.sh): a scratch
# folder, `run` keeping a command's output and exit code, the checks on
# them, and the closing tally. Needs EXE (the flowlab under test).

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
RUN_OPTS=() # global options `run` puts before the command (e.g. --quiet)

fail() {
    echo "FAIL: $*"
    echo "  stderr: $(head -c 2000 "$TMP/err")"
    failures=$((failures + 1))
}

# run ARGS...: flowlab ARGS..., keeping stdout, stderr and the exit code.
run() {
    "$EXE" ${RUN_OPTS[@]+"${RUN_OPTS[@]}"} "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
}

# expect_error NAME CODE TEXT...: the last run exited with CODE and printed
# exactly one line on stderr, a flowlab error ("flowlab: error: " or
# "flowlab COMMAND: error: ") containing every TEXT.
expect_error() {
    local name=$1 code=$2 before=$failures
    shift 2
    [ "$rc" = "$code" ] || fail "$name: exit code $rc, expected $code"
    local lines
    lines=$(wc -l <"$TMP/err")
    [ "$lines" = 1 ] || fail "$name: $lines lines on stderr, expected 1"
    grep -qE '^flowlab( [a-z-]+)?: error: ' "$TMP/err" || fail "$name: stderr is not a flowlab error"
    for text in "$@"; do
        grep -qF -- "$text" "$TMP/err" || fail "$name: stderr lacks '$text'"
    done
    if [ "$failures" = "$before" ]; then echo "ok: $name"; fi
}

# expect_ok NAME: the last run exited with 0.
expect_ok() {
    local name=$1
    [ "$rc" = 0 ] || { fail "$name: exit code $rc, expected 0"; return; }
    echo "ok: $name"
}

# finish WHAT: the tally; exit 1 after any failure.
finish() {
    if [ "$failures" -gt 0 ]; then
        echo "$failures failure(s)"
        exit 1
    fi
    echo "all $1 checks passed"
}
