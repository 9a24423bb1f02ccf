# lib.sh — sourced by the real-program tests of tests/preload/ (preload_*.sh) and deps.sh.
#
# A real-program test defines a job: a shell function that runs real programs on generated,
# deterministic input, in the current directory, printing what they print, and leaving any
# result files in ./artifacts/.  run_twice runs the job twice in the same fresh directory
# (same absolute paths, so paths in outputs agree): once on the system allocator, once with
# LD_PRELOAD=libobmem-preload.so exported, so that every process the job starts (the programs
# under test, their children, and the shell utilities around them) runs on obmem.  The two
# outputs (after the job's `normalize` filter, which removes timing) and the two exit statuses
# must be identical, and so must every file under artifacts/, byte for byte.
# require_on_obmem proves first that the preload is really in effect for a given program: the
# dynamic linker must report that it bound the program's and glibc's malloc and free to it.
#
# Environment: OBMEM_TEST_PRELOAD  path of libobmem-preload.so (set by ctest)
#              OBMEM_TEST_KEEP=1 keeps the work directory for a look after a failure
# Output: the last line is "N passed, N failed" (read by the CI's summary).

set -euo pipefail

TEST_NAME=${TEST_NAME:-$(basename "$0" .sh)}
NPASSED=0

fail() {
  echo "$TEST_NAME: FAIL: $*" >&2
  echo "$NPASSED passed, 1 failed"
  exit 1
}

pass() {
  NPASSED=$((NPASSED + 1))
  echo "$TEST_NAME: ok: $*"
}

finish() {
  echo "$NPASSED passed, 0 failed"
}

# The first python3 whose standard library has CPython's regression tests: the one on PATH
# (resolved to the real interpreter, not a pyenv shim script), then Debian's.  Prints its path.
python_with_tests() {
  local candidate resolved
  for candidate in python3 /usr/bin/python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    resolved=$("$candidate" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
    [ -n "$resolved" ] || continue
    if "$resolved" -c 'import test.libregrtest, test.test_dict' >/dev/null 2>&1; then
      echo "$resolved"
      return 0
    fi
  done
  return 1
}

setup_work() {
  PRELOAD=${OBMEM_TEST_PRELOAD:-}
  [ -n "$PRELOAD" ] || fail "OBMEM_TEST_PRELOAD is not set (the path of libobmem-preload.so)"
  [ -f "$PRELOAD" ] || fail "no preload library at $PRELOAD"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/obmem-$TEST_NAME.XXXXXX")
  if [ "${OBMEM_TEST_KEEP:-0}" = 1 ]; then
    echo "$TEST_NAME: work directory $WORK (kept)"
  else
    trap 'rm -rf "$WORK"' EXIT
  fi
  # the same environment for both runs, whatever the caller's
  export LC_ALL=C TZ=UTC HOME="$WORK/home"
  mkdir -p "$HOME"
}

# require_on_obmem PROGRAM ARGS...: run preloaded, the program and glibc bind malloc and free
# to the preload (the dynamic linker's own account: LD_DEBUG=bindings).
require_on_obmem() {
  local trace="$WORK/bindings" err="$WORK/on-obmem.err"
  rm -f "$trace".*
  if ! env LD_PRELOAD="$PRELOAD" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$trace" "$@" \
      >/dev/null 2>"$err"; then
    cat "$err" >&2
    fail "'$*' failed under the preload"
  fi
  if grep -q "cannot be preloaded" "$err"; then
    fail "the dynamic linker refused $PRELOAD"
  fi
  local sym from
  for sym in malloc free; do
    grep -h "to $PRELOAD \[0\]: normal symbol \`$sym'" "$trace".* >"$WORK/bound" || true
    grep -q "binding file [^ ]*/libc\.so\.6 " "$WORK/bound" ||
      fail "'$1': glibc's $sym is not bound to $PRELOAD"
    from=$(grep -v -m1 "binding file [^ ]*/lib\(c\|stdc++\)\.so\.6 " "$WORK/bound" || true)
    [ -n "$from" ] || fail "'$1': no $sym of the program is bound to $PRELOAD"
  done
  rm -f "$trace".*
  pass "$1 runs on obmem (malloc and free bound to the preload)"
}

# The default filter: none.  A job file may redefine it.
normalize() {
  cat
}

# run_twice JOB: see the top of this file.
run_twice() {
  local job=$1 mode status
  for mode in plain preload; do
    rm -rf "$WORK/run"
    mkdir -p "$WORK/run/artifacts" "$WORK/$mode"
    local start=$SECONDS
    set +e
    (
      set -euo pipefail
      cd "$WORK/run"
      if [ "$mode" = preload ]; then
        export LD_PRELOAD="$PRELOAD"
      else
        unset LD_PRELOAD
      fi
      "$job"
    ) >"$WORK/$mode/raw" 2>&1
    status=$?
    set -e
    echo "$status" >"$WORK/$mode/status"
    normalize <"$WORK/$mode/raw" >"$WORK/$mode/output"
    rm -rf "$WORK/$mode/artifacts"
    mv "$WORK/run/artifacts" "$WORK/$mode/artifacts"
    echo "$TEST_NAME: $job ($mode): exit $status, $((SECONDS - start)) s"
  done
  rm -rf "$WORK/run"
  if [ "$(cat "$WORK/plain/status")" != 0 ]; then
    tail -30 "$WORK/plain/raw" >&2
    fail "$job failed without the preload (exit $(cat "$WORK/plain/status")): a broken test"
  fi
  if [ "$(cat "$WORK/preload/status")" != 0 ]; then
    tail -30 "$WORK/preload/raw" >&2
    fail "$job failed with the preload (exit $(cat "$WORK/preload/status")), not without"
  fi
  if ! cmp -s "$WORK/plain/output" "$WORK/preload/output"; then
    diff -u "$WORK/plain/output" "$WORK/preload/output" | awk 'NR <= 60' >&2 || true
    fail "$job: the output differs with the preload (- without, + with)"
  fi
  pass "$job: same output ($(wc -l <"$WORK/plain/output") lines)"
  local f nfiles=0
  (cd "$WORK/plain/artifacts" && find . -type f | sort) >"$WORK/plain.files"
  (cd "$WORK/preload/artifacts" && find . -type f | sort) >"$WORK/preload.files"
  if ! cmp -s "$WORK/plain.files" "$WORK/preload.files"; then
    diff -u "$WORK/plain.files" "$WORK/preload.files" >&2 || true
    fail "$job: not the same result files with the preload"
  fi
  while read -r f; do
    cmp "$WORK/plain/artifacts/$f" "$WORK/preload/artifacts/$f" >&2 ||
      fail "$job: result file $f differs with the preload"
    nfiles=$((nfiles + 1))
  done <"$WORK/plain.files"
  pass "$job: same $nfiles result files"
}
