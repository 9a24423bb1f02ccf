#!/usr/bin/env bash
# run.sh — the obmem allocator benchmark suite: every workload under every allocator.
#
# Runs each bench_<workload> program (see bench/CMakeLists.txt) under glibc's malloc (no
# preload), mimalloc, jemalloc, tcmalloc and obmem (build/libobmem-preload.so), each swapped in
# with LD_PRELOAD by bench_measure, which records wall time and peak RSS.  Runs are interleaved
# — repetition by repetition, workload by workload, with the allocator order rotated each time —
# so that the noise of a shared machine spreads evenly over the allocators.  bench/report.py
# then prints one table (medians, ratios obmem/other, their geometric means) plus the
# microbenchmark's ns-per-pair table, and writes them to bench/results/latest.md.
#
# Usage: bash bench/run.sh [WORKLOAD...]           (from anywhere; `make bench` runs it)
# Environment:
#   BENCH_REPS=5          runs per workload and allocator
#   BENCH_SCALE=1         multiplies the work of every workload (0.1 for a quick look)
#   BENCH_WORKLOADS=...   workloads to run, comma- or space-separated (or give them as arguments)
#   BENCH_ALLOCATORS=...  default "glibc mimalloc jemalloc tcmalloc obmem"
#   BENCH_TIMEOUT=60      seconds before a run is killed and reported as "timeout" (default
#                         60 x max(1, BENCH_SCALE)); a cell that timed out runs no more reps
#   BENCH_BUILD_DIR=build CMake build directory of the project
#   BENCH_OBMEM_LIB=...   the obmem preload library (default $BENCH_BUILD_DIR/libobmem-preload.so)
#   BENCH_NO_INSTALL=1    never call apt-get; allocators that are missing are skipped
# Missing Debian packages (libmimalloc-dev, libjemalloc-dev, libgoogle-perftools-dev) are
# installed with apt-get when running as root; an allocator that cannot be had is skipped with
# a note.  A run that crashes, hangs or prints a wrong checksum is reported as such in its cell.
# Raw results (every run's output, runs.tsv, micro.tsv) stay in bench/results/raw/.  What this
# shares with bench/run_python.sh (the settings, the allocators, the build steps, the run loop)
# is in bench/run_common.sh.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=bench/run_common.sh
source bench/run_common.sh

ALL_WORKLOADS=(random lifo fifo trees realloc align large huge threads prodcons server micro)
KNOWN_ALLOCATORS=(glibc mimalloc jemalloc tcmalloc obmem)
RAW=$RESULTS/raw
split_list ALLOCATORS "${BENCH_ALLOCATORS:-${KNOWN_ALLOCATORS[*]}}"
pick_workloads "${BENCH_WORKLOADS:-${ALL_WORKLOADS[*]}}" "$@"

check_settings 60
check_allocators
command -v python3 >/dev/null || die "python3 is needed for the report"
start_raw

# ---- the allocators -------------------------------------------------------------------------

LIB=([glibc]="") # glibc's malloc: the one there is without a preload
find_allocators

# ---- build ----------------------------------------------------------------------------------

BIN=$BUILD/bench
build_project bench_programs
if ((!build_ok)); then
  # The library may be mid-change; the workloads do not need it.
  note "the project did not build (see bench/results/raw/build.log); workloads built on their own"
  BIN=$BUILD/bench-standalone
  { cmake -S bench -B "$BIN" -DCMAKE_BUILD_TYPE=Release && cmake --build "$BIN" -j2; } \
    >>"$RAW/build.log" 2>&1 || die "the benchmark programs do not build; see $RAW/build.log"
fi
find_obmem
MEASURE=$BIN/bench_measure
((build_ok)) && check_build_type
[[ -x $MEASURE ]] || die "$MEASURE is missing"
pick_run_allocators

# ---- run ------------------------------------------------------------------------------------

write_meta
printf 'alloc\trep\tvariant\tsize\tns\n' >"$RAW/micro.tsv"

# One run: bench_<workload> under the allocator; bench_micro's ns lines go to micro.tsv too.
run_workload() { # workload allocator rep base
  "$MEASURE" -p "${LIB[$2]}" -t "$TIMEOUT" -o "$4.res" -- "$BIN/bench_$1" "$SCALE" >"$4.out" 2>"$4.err"
  if [[ $1 == micro ]]; then
    awk -v a="$2" -v r="$3" '$1 == "ns" { printf "%s\t%s\t%s\t%s\t%s\n", a, r, $2, $3, $4 }' \
      "$4.out" >>"$RAW/micro.tsv"
  fi
}
REFERENCE_ALLOCATOR=glibc # the progress lines call a checksum other than glibc's "wrong"
NAME_WIDTH=9
MESSAGE_LINE="head" # a C workload's first line on stderr says what went wrong
run_all

python3 bench/report.py "$RAW" --out "$RESULTS/latest.md" --base obmem || die "report.py failed"
say ""
say "written to $RESULTS/latest.md"

# ---- CPython as a client: bench/run_python.sh ----------------------------------------------
# The Python workloads of bench/python/ under pymalloc and PYTHONMALLOC=malloc on each
# allocator (table in bench/results/python.md).  BENCH_PYTHON=0 skips them, BENCH_PYTHON=1
# runs them always; by default they run when no C workload was picked (no arguments and no
# BENCH_WORKLOADS).  BENCH_REPS, BENCH_SCALE, BENCH_BUILD_DIR, BENCH_OBMEM_LIB and
# BENCH_NO_INSTALL apply to them too.
python_bench=${BENCH_PYTHON:-auto}
if [[ $python_bench == auto ]]; then
  python_bench=0
  (($# == 0)) && [[ -z ${BENCH_WORKLOADS:-} ]] && python_bench=1
fi
if [[ $python_bench == 1 ]] && ((!interrupted)); then
  say ""
  say "CPython workloads (bench/run_python.sh; BENCH_PYTHON=0 skips them) ..."
  bash bench/run_python.sh || die "bench/run_python.sh failed"
fi
if [[ ${BENCH_GC:-$python_bench} == 1 ]] && ((!interrupted)); then bash bench/run_gc.sh || die "bench/run_gc.sh failed"; fi # the cycle collector beside CPython's (bench/results/gc.md; BENCH_GC=0/1 as BENCH_PYTHON)
