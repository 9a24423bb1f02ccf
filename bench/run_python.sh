#!/usr/bin/env bash
# run_python.sh — CPython as a client of the allocator: the Python workloads of bench/python/
# under CPython's own pymalloc and, with PYTHONMALLOC=malloc (every object from malloc), under
# glibc's malloc, mimalloc, jemalloc and obmem (build/libobmem-preload.so), and with
# obmem.install() (obmem-install: the CPython module python/, no preload, CPython's allocator
# domains on obmem; bench/python/installed.py runs the workload after the call).
#
# Each run is one `python3 -S bench/python/<workload>.py SCALE` started by bench_measure (see
# bench/measure.c), which records wall time and peak RSS and, for the preloaded allocators,
# sets LD_PRELOAD in the child only.  Runs are interleaved like bench/run.sh: repetition by
# repetition, workload by workload, allocator order rotated each time.  bench/python/report.py
# prints one table (medians; ratios other/pymalloc, time and peak RSS; their geometric means)
# and writes it to bench/results/python.md.  Every workload prints a checksum of its results;
# a run whose checksum differs from pymalloc's is reported as "wrong".
#
# Usage: bash bench/run_python.sh [WORKLOAD...]     (from anywhere)
# Environment:
#   BENCH_REPS=5                 runs per workload and allocator
#   BENCH_SCALE=1                multiplies the work of every workload
#   BENCH_PYTHON_WORKLOADS=...   workloads, comma- or space-separated (or give them as arguments)
#   BENCH_PYTHON_ALLOCATORS=...  default "pymalloc glibc mimalloc jemalloc obmem
#                                obmem-install"; tcmalloc is also known
#   BENCH_PYTHON_EXE=...         the interpreter (default: the real executable behind `python3`,
#                                resolved through sys.executable so that a pyenv shim or other
#                                wrapper script is not timed and does not run preloaded)
#   BENCH_PYTHON_FLAGS=-S        interpreter flags (-S: no site import, so .pth files of the
#                                machine's site-packages do not take part); "" for none
#   BENCH_TIMEOUT=120            seconds before a run is killed (default 120 x max(1, scale))
#   BENCH_BUILD_DIR=build        CMake build directory of the project
#   BENCH_OBMEM_LIB=...          the obmem preload library (default $BENCH_BUILD_DIR/libobmem-preload.so)
#   BENCH_NO_INSTALL=1           never call apt-get; allocators that are missing are skipped
# PYTHONHASHSEED is fixed at 0 so that every run makes the same allocations.  OBMEM_* variables
# of the caller's environment are passed on (e.g. OBMEM_PURGE_DELAY_MS).  Raw results (every
# run's output, runs.tsv) stay in bench/results/raw-python/.  What this shares with bench/run.sh
# is in bench/run_common.sh.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=bench/run_common.sh
source bench/run_common.sh

ALL_WORKLOADS=("${PYTHON_WORKLOADS[@]}")
KNOWN_ALLOCATORS=(pymalloc glibc mimalloc jemalloc tcmalloc obmem obmem-install)
PYFLAGS=${BENCH_PYTHON_FLAGS--S}
RAW=$RESULTS/raw-python
split_list ALLOCATORS "${BENCH_PYTHON_ALLOCATORS:-pymalloc glibc mimalloc jemalloc obmem obmem-install}"
pick_workloads "${BENCH_PYTHON_WORKLOADS:-${ALL_WORKLOADS[*]}}" "$@"

check_settings 120
check_allocators
((${#WORKLOADS[@]} > 0)) || die "no workload to run"

find_python
PY_PYMALLOC=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("WITH_PYMALLOC"))' 2>/dev/null)

start_raw
[[ $PY_PYMALLOC == 1 ]] || note "$PY was built without pymalloc: its 'pymalloc' runs use malloc"

# ---- the allocators -------------------------------------------------------------------------

# pymalloc and glibc's malloc are the ones there are without a preload.
LIB=([pymalloc]="" [glibc]="")
find_allocators
VERSION[pymalloc]=${PY_VERSION#Python }

# ---- build: bench_measure and the obmem preload library ------------------------------------

MEASURE=$BUILD/bench/bench_measure
build_project bench_measure
if ((!build_ok)) && [[ ! -x $MEASURE ]]; then
  note "the project did not build (see $RAW/build.log); bench_measure built on its own"
  MEASURE=$BUILD/bench-standalone/bench_measure
  { cmake -S bench -B "$BUILD/bench-standalone" -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$BUILD/bench-standalone" -j2 --target bench_measure; } \
    >>"$RAW/build.log" 2>&1 || die "bench_measure does not build; see $RAW/build.log"
fi
[[ -x $MEASURE ]] || die "$MEASURE is missing"
find_obmem
# obmem-install: the CPython module, built for this interpreter by the same build
if wanted obmem-install; then
  if ((build_ok)) && cmake --build "$BUILD" -j2 --target obmem_python >>"$RAW/build.log" 2>&1 &&
    PYTHONPATH=$BUILD/python "$PY" -S -c 'import obmem' 2>>"$RAW/build.log"; then
    LIB[obmem-install]=""
    VERSION[obmem-install]=${VERSION[obmem]:-$(git rev-parse --short HEAD 2>/dev/null)}
  else
    note "obmem-install skipped: the module did not build or does not import with $PY (see $RAW/build.log)"
  fi
fi
# Only the build's own preload library says something about how $BUILD was configured.
if [[ -n ${LIB[obmem]:-} && -f $BUILD/CMakeCache.txt && -z ${BENCH_OBMEM_LIB:-} ]]; then
  check_build_type
fi
pick_run_allocators

# ---- run ------------------------------------------------------------------------------------

write_meta python "$PY_VERSION ($PY${PYFLAGS:+ $PYFLAGS}; pymalloc built in: ${PY_PYMALLOC:-?})"

read -r -a PYARGS <<<"$PYFLAGS"
# One run: python3 bench/python/<workload>.py, with PYTHONMALLOC=malloc under every allocator
# but pymalloc, and without the caller's PYTHON* settings that change how CPython allocates.
# obmem-install runs the workload through bench/python/installed.py with the module on
# PYTHONPATH (pymalloc holds what CPython allocated before the call).
run_workload() { # workload allocator rep base
  local pymalloc=malloc runner=() path=${PYTHONPATH:-}
  [[ $2 == pymalloc || $2 == obmem-install ]] && pymalloc=pymalloc
  if [[ $2 == obmem-install ]]; then
    runner=(bench/python/installed.py)
    path=$(realpath -m "$BUILD/python")
  fi
  env -u PYTHONDEVMODE -u PYTHONTRACEMALLOC -u PYTHONMALLOCSTATS -u LD_PRELOAD -u OBMEM_PYTHON \
    PYTHONMALLOC="$pymalloc" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$path" \
    "$MEASURE" -p "${LIB[$2]}" -t "$TIMEOUT" -o "$4.res" -- \
    "$PY" "${PYARGS[@]}" "${runner[@]}" "bench/python/$1.py" "$SCALE" >"$4.out" 2>"$4.err"
}
REFERENCE_ALLOCATOR=pymalloc # the progress lines call a checksum other than pymalloc's "wrong"
NAME_WIDTH=14
MESSAGE_LINE="tail" # the last line of a Python traceback names the exception
run_all "$PY_VERSION ($PY): "

python3 bench/python/report.py "$RAW" --out "$RESULTS/python.md" --base pymalloc || die "report.py failed"
say ""
say "written to $RESULTS/python.md"
