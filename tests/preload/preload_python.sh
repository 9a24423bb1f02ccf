#!/usr/bin/env bash
# preload_python.sh — CPython's own regression tests with every Python object from obmem.
#
# With PYTHONMALLOC=malloc CPython sends all its allocations (objects included, pymalloc off)
# to malloc, which the preload makes obmem's.  The same set of CPython test modules runs
# twice, at the same time (2 cores): once on glibc's malloc, once with
# LD_PRELOAD=libobmem-preload.so.  Each run writes regrtest's JUnit XML; junit_results.py
# turns it into one line per test case (id and outcome: passed, failure, error, skipped),
# and the two lists must be identical: the same test cases run, with the same outcomes (a
# test that fails on this machine with glibc must fail the same way on obmem, no more).
# A run that crashes leaves no XML and fails the test; so does any "obmem:" report.
# Timing-sensitive tests can fail by chance on a loaded machine: when the lists differ, the
# modules concerned run once more in both modes and only a difference that repeats fails.
#
# The interpreter is the first python3 with the `test` package (lib.sh: python_with_tests;
# on this project's machines the pyenv build on PATH; deps.sh installs Debian's
# libpython3.X-testsuite for /usr/bin/python3 when no interpreter has it).
# Usage: preload_python.sh [MODULE...]   (env OBMEM_TEST_PRELOAD; default: the list below)
. "$(dirname "$0")/lib.sh"
setup_work
HERE=$(cd "$(dirname "$0")" && pwd)

PYTHON=$(python_with_tests) || fail "no python3 with CPython's test package (run deps.sh)"
echo "$TEST_NAME: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"

# The issue's list first, then more modules that churn memory (containers, pickling,
# compression and hashing in C, ctypes, threads), within the suite's time budget.
MODULES=(test_dict test_list test_set test_gc test_weakref test_json test_re test_threading
  test_bytes test_unicode
  test_collections test_pickle test_array test_deque test_ordered_dict test_descr test_class
  test_tuple test_sort test_memoryview test_copy test_functools test_heapq test_csv test_zlib
  test_bz2 test_lzma test_hashlib test_ctypes test_thread test_struct test_marshal)
if [ $# -gt 0 ]; then MODULES=("$@"); fi

# run_mode MODE TAG MODULE...: regrtest in $WORK/MODE-TAG, JUnit XML at $WORK/MODE-TAG.xml
run_mode() {
  local mode=$1 tag=$2
  shift 2
  local dir="$WORK/$mode-$tag"
  mkdir -p "$dir/tmp"
  (
    cd "$dir"
    export TMPDIR="$dir/tmp" PYTHONMALLOC=malloc PYTHONHASHSEED=0
    if [ "$mode" = preload ]; then export LD_PRELOAD="$PRELOAD"; else unset LD_PRELOAD; fi
    "$PYTHON" -m test --junit-xml "$WORK/$mode-$tag.xml" "$@" >"$WORK/$mode-$tag.log" 2>&1
  ) || true # failures are compared, not fatal
}

# results MODE TAG: the per-case list; fails the test when the run left no readable XML
results() {
  local mode=$1 tag=$2
  if ! "$PYTHON" "$HERE/junit_results.py" "$WORK/$mode-$tag.xml" >"$WORK/$mode-$tag.results"; then
    tail -40 "$WORK/$mode-$tag.log" >&2
    fail "the $mode run ($tag) left no readable results: crashed?"
  fi
}

# run_both TAG MODULE...: both modes at once; leaves $WORK/{plain,preload}-TAG.results
run_both() {
  local tag=$1
  shift
  local start=$SECONDS
  run_mode plain "$tag" "$@" &
  local plain_pid=$!
  run_mode preload "$tag" "$@"
  wait "$plain_pid"
  results plain "$tag"
  results preload "$tag"
  if grep -n "^obmem:" "$WORK/preload-$tag.log" >&2; then
    fail "obmem reported an error while running the tests ($tag)"
  fi
  echo "$TEST_NAME: $tag: $# modules, $(($(wc -l <"$WORK/plain-$tag.results") - 1)) test cases," \
    "$((SECONDS - start)) s"
}

require_on_obmem "$PYTHON" -c 'import json; json.dumps(list(range(1000)))'
run_both all "${MODULES[@]}"
{ grep -E ' (failure|error)$' "$WORK/plain-all.results" || true; } |
  awk -v name="$TEST_NAME" 'NR <= 20 { print name ": fails on glibc too: " $0 }'

if ! cmp -s "$WORK/plain-all.results" "$WORK/preload-all.results"; then
  diff "$WORK/plain-all.results" "$WORK/preload-all.results" | sed 's/^/  /' >&2 || true
  # the modules of the differing cases ("test.test_x.Class.method" -> test_x)
  mapfile -t again < <(diff "$WORK/plain-all.results" "$WORK/preload-all.results" |
    sed -n 's/^[<>] test\.\(test_[A-Za-z0-9_]*\).*/\1/p' | sort -u)
  [ ${#again[@]} -gt 0 ] || fail "the results differ with the preload (- glibc, + obmem)"
  echo "$TEST_NAME: results differ in ${again[*]}; running those once more in both modes"
  run_both again "${again[@]}"
  if ! cmp -s "$WORK/plain-again.results" "$WORK/preload-again.results"; then
    diff -u "$WORK/plain-again.results" "$WORK/preload-again.results" >&2 || true
    fail "CPython's tests give different results on obmem (- glibc, + obmem), twice"
  fi
  echo "$TEST_NAME: the rerun agrees: the first difference was chance (timing), not obmem"
fi
pass "CPython's tests: the same $(($(wc -l <"$WORK/plain-all.results") - 1)) results on obmem as on glibc"
finish
