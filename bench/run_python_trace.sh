#!/usr/bin/env bash
# run_python_trace.sh — what Python-level tracing costs: the workloads of bench/python/ run
# untraced on obmem (obmem.install()), traced by obmem.start(1) and obmem.start(128) (exact,
# full Python stacks) and obmem.start(128, sample=512 KiB) (sampled), untraced on CPython's pymalloc, and traced by tracemalloc.start(1) and
# tracemalloc.start(25) (issue 6's comparison).  One run is
# `python3 -S bench/python/traced.py MODE bench/python/<workload>.py SCALE` under bench_measure
# (wall time, user + sys CPU time, peak RSS), interleaved like bench/run_python.sh: repetition
# by repetition, workload by workload, mode order rotated each time.  bench/python/report_trace.py
# prints the medians, the ratios traced/untraced (obmem's modes to obmem, tracemalloc's to
# pymalloc) of wall time, CPU time and peak RSS with their geometric means, and issue 6's
# targets; it writes them to bench/results/python-trace.md.  A run whose checksum differs from
# the untraced one is "wrong".
#
# Usage: bash bench/run_python_trace.sh [WORKLOAD...]     (from anywhere)
# Environment: as bench/run_python.sh (BENCH_REPS=5, BENCH_SCALE, BENCH_PYTHON_WORKLOADS,
# BENCH_PYTHON_EXE, BENCH_PYTHON_FLAGS=-S, BENCH_TIMEOUT, BENCH_BUILD_DIR), and
#   BENCH_TRACE_MODES=...   default "obmem obmem-1 obmem-128 obmem-128-s512K pymalloc tmalloc-1
#                           tmalloc-25"; obmem-N and tmalloc-N take any N (1..128 for obmem),
#                           obmem-N-sBYTES is sampled mode (BYTES: digits, optional K or M)
# Raw results stay in bench/results/raw-python-trace/.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=bench/run_common.sh
source bench/run_common.sh

ALL_WORKLOADS=("${PYTHON_WORKLOADS[@]}")
PYFLAGS=${BENCH_PYTHON_FLAGS--S}
RAW=$RESULTS/raw-python-trace
split_list ALLOCATORS "${BENCH_TRACE_MODES:-obmem obmem-1 obmem-128 obmem-128-s512K pymalloc tmalloc-1 tmalloc-25}"
KNOWN_ALLOCATORS=("${ALLOCATORS[@]}") # checked below by pattern instead
pick_workloads "${BENCH_PYTHON_WORKLOADS:-${ALL_WORKLOADS[*]}}" "$@"

check_settings 300
for a in "${ALLOCATORS[@]}"; do
  [[ $a =~ ^(obmem|pymalloc|obmem-[0-9]+|obmem-[0-9]+-s[0-9]+[KM]?|tmalloc-[0-9]+)$ ]] ||
    die "unknown mode '$a' (obmem, obmem-N, obmem-N-sBYTES, pymalloc, tmalloc-N)"
done
((${#WORKLOADS[@]} > 0)) || die "no workload to run"

find_python

start_raw

# ---- build: bench_measure and the module -----------------------------------------------------

MEASURE=$BUILD/bench/bench_measure
build_project bench_measure
((build_ok)) || die "the project did not build (see $RAW/build.log)"
cmake --build "$BUILD" -j2 --target obmem_python >>"$RAW/build.log" 2>&1 &&
  PYTHONPATH=$BUILD/python "$PY" -S -c 'import obmem' 2>>"$RAW/build.log" ||
  die "the module did not build or does not import with $PY (see $RAW/build.log)"
[[ -f $BUILD/CMakeCache.txt ]] && check_build_type
for a in "${ALLOCATORS[@]}"; do
  LIB[$a]=""
  VERSION[$a]=""
done
VERSION[obmem]=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
[[ -n $(git status --porcelain -- src include python 2>/dev/null) ]] && VERSION[obmem]+="+changes"
pick_run_allocators

# ---- run ------------------------------------------------------------------------------------

write_meta python "$PY_VERSION ($PY${PYFLAGS:+ $PYFLAGS})"

read -r -a PYARGS <<<"$PYFLAGS"
PYPATH=$(realpath -m "$BUILD/python")
run_workload() { # workload mode rep base
  env -u PYTHONDEVMODE -u PYTHONTRACEMALLOC -u PYTHONMALLOCSTATS -u PYTHONMALLOC -u LD_PRELOAD \
    -u OBMEM_PYTHON PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PYPATH" \
    "$MEASURE" -t "$TIMEOUT" -o "$4.res" -- \
    "$PY" "${PYARGS[@]}" bench/python/traced.py "$2" "bench/python/$1.py" "$SCALE" >"$4.out" 2>"$4.err"
}
REFERENCE_ALLOCATOR=${RUN_ALLOCATORS[0]}
NAME_WIDTH=14
MESSAGE_LINE="tail"
run_all "$PY_VERSION ($PY): "

python3 bench/python/report_trace.py "$RAW" --out "$RESULTS/python-trace.md" || die "report_trace.py failed"
say ""
say "written to $RESULTS/python-trace.md"
