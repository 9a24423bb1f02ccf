#!/usr/bin/env bash
# run_python.sh — CPython as a client of the allocator: the Python workloads of bench/python/
# under CPython's own pymalloc and, with PYTHONMALLOC=malloc (every object from malloc), under
# glibc's malloc, mimalloc, jemalloc and obmem (build/libobmem-preload.so).
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
#   BENCH_PYTHON_ALLOCATORS=...  default "pymalloc glibc mimalloc jemalloc obmem"; tcmalloc
#                                is also known
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
# run's output, runs.tsv) stay in bench/results/raw-python/.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

ALL_WORKLOADS=(churn containers json_roundtrip instances strings cycles mixed)
KNOWN_ALLOCATORS=(pymalloc glibc mimalloc jemalloc tcmalloc obmem)
REPS=${BENCH_REPS:-5}
SCALE=${BENCH_SCALE:-1}
TIMEOUT=${BENCH_TIMEOUT:-}
BUILD=${BENCH_BUILD_DIR:-build}
OBMEM_LIB=${BENCH_OBMEM_LIB:-$BUILD/libobmem-preload.so}
PYFLAGS=${BENCH_PYTHON_FLAGS--S}
RESULTS=bench/results
RAW=$RESULTS/raw-python
read -r -a ALLOCATORS <<<"$(tr ',' ' ' <<<"${BENCH_PYTHON_ALLOCATORS:-pymalloc glibc mimalloc jemalloc obmem}")"
if (($# > 0)); then
  WORKLOADS=("$@")
else
  read -r -a WORKLOADS <<<"$(tr ',' ' ' <<<"${BENCH_PYTHON_WORKLOADS:-${ALL_WORKLOADS[*]}}")"
fi

say() { printf '%s\n' "$*" >&2; }
die() {
  say "bench/run_python.sh: $*"
  exit 2
}

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive integer, not '$REPS'"
[[ $SCALE =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && awk -v s="$SCALE" 'BEGIN { exit !(s > 0) }' ||
  die "BENCH_SCALE must be a positive number, not '$SCALE'"
[[ -n $TIMEOUT ]] || TIMEOUT=$(awk -v s="$SCALE" 'BEGIN { t = 120 * (s > 1 ? s : 1); printf "%d", t == int(t) ? t : int(t) + 1 }')
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT must be a positive integer (seconds), not '$TIMEOUT'"
for w in "${WORKLOADS[@]}"; do
  [[ " ${ALL_WORKLOADS[*]} " == *" $w "* && -f bench/python/$w.py ]] ||
    die "unknown workload '$w' (known: ${ALL_WORKLOADS[*]})"
done
for a in "${ALLOCATORS[@]}"; do
  [[ " ${KNOWN_ALLOCATORS[*]} " == *" $a "* ]] || die "unknown allocator '$a' (known: ${KNOWN_ALLOCATORS[*]})"
done
((${#WORKLOADS[@]} > 0)) || die "no workload to run"

# The interpreter: the real binary, not a wrapper script.
if [[ -n ${BENCH_PYTHON_EXE:-} ]]; then
  PY=$BENCH_PYTHON_EXE
else
  command -v python3 >/dev/null || die "python3 is not installed"
  PY=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
fi
[[ -x $PY ]] || PY=$(command -v "$PY") || die "no interpreter at '$PY'"
PY_VERSION=$("$PY" --version 2>&1)
PY_PYMALLOC=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("WITH_PYMALLOC"))' 2>/dev/null)

rm -rf "$RAW"
mkdir -p "$RAW"
NOTES=$RAW/notes.txt
: >"$NOTES"
note() {
  say "note: $*"
  printf '%s\n' "$*" >>"$NOTES"
}
[[ $PY_PYMALLOC == 1 ]] || note "$PY was built without pymalloc: its 'pymalloc' runs use malloc"

# ---- the allocators (as in bench/run.sh) ----------------------------------------------------

declare -A DEV_PACKAGE=([mimalloc]=libmimalloc-dev [jemalloc]=libjemalloc-dev [tcmalloc]=libgoogle-perftools-dev)
declare -A LIB_NAME=([mimalloc]=libmimalloc [jemalloc]=libjemalloc [tcmalloc]=libtcmalloc_minimal)
declare -A LIB=([pymalloc]="" [glibc]="")
declare -A VERSION=()

wanted() { [[ " ${ALLOCATORS[*]} " == *" $1 "* ]]; }

missing=()
for a in mimalloc jemalloc tcmalloc; do
  wanted "$a" || continue
  dpkg-query -W -f='${Status}' "${DEV_PACKAGE[$a]}" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("${DEV_PACKAGE[$a]}")
done
if ((${#missing[@]} > 0)); then
  if [[ ${BENCH_NO_INSTALL:-0} == 1 ]]; then
    say "not installing ${missing[*]} (BENCH_NO_INSTALL=1)"
  elif [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    say "cannot install ${missing[*]}: needs root and apt-get"
  else
    say "installing ${missing[*]} with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$RAW/apt.log" 2>&1 || say "apt-get update failed (see $RAW/apt.log)"
    for pkg in "${missing[@]}"; do
      apt-get install -y -qq "$pkg" >>"$RAW/apt.log" 2>&1 || say "apt-get install $pkg failed (see $RAW/apt.log)"
    done
  fi
fi

# The real file behind lib<name>.so of the -dev package, else whatever lib<name>.so.N exists.
find_library() {
  local name=$1 package=$2 file=""
  file=$(dpkg -L "$package" 2>/dev/null | grep -E "/$name\.so$" | head -n 1)
  [[ -n $file ]] && file=$(readlink -f "$file")
  if [[ -z $file || ! -f $file ]]; then
    file=$(ls /usr/lib/*-linux-gnu/"$name".so.* /usr/lib/"$name".so.* /usr/local/lib/"$name".so* 2>/dev/null |
      grep -v debug | head -n 1)
  fi
  printf '%s' "$file"
}

# An allocator is usable when /bin/true runs with it preloaded and the loader says nothing.
preload_works() {
  local out
  out=$(LD_PRELOAD=$1 /bin/true 2>&1) && [[ -z $out ]]
}

for a in mimalloc jemalloc tcmalloc; do
  wanted "$a" || continue
  lib=$(find_library "${LIB_NAME[$a]}" "${DEV_PACKAGE[$a]}")
  if [[ -z $lib ]]; then
    note "$a skipped: ${LIB_NAME[$a]}.so not found (package ${DEV_PACKAGE[$a]} not installed)"
  elif ! preload_works "$lib"; then
    note "$a skipped: $lib cannot be preloaded"
  else
    LIB[$a]=$lib
    VERSION[$a]=$(dpkg-query -W -f='${Version}' "${DEV_PACKAGE[$a]}" 2>/dev/null)
  fi
done
VERSION[glibc]=$(ldd --version 2>/dev/null | head -n 1 | grep -oE '[0-9]+\.[0-9]+$')
VERSION[pymalloc]=${PY_VERSION#Python }

# ---- build: bench_measure and the obmem preload library ------------------------------------

MEASURE=$BUILD/bench/bench_measure
build_ok=1
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  say "configuring $BUILD ..."
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$RAW/build.log" 2>&1 || build_ok=0
fi
if ((build_ok)); then
  cmake --build "$BUILD" -j2 --target bench_measure >>"$RAW/build.log" 2>&1 || build_ok=0
fi
if ((!build_ok)) && [[ ! -x $MEASURE ]]; then
  note "the project did not build (see $RAW/build.log); bench_measure built on its own"
  MEASURE=$BUILD/bench-standalone/bench_measure
  { cmake -S bench -B "$BUILD/bench-standalone" -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$BUILD/bench-standalone" -j2 --target bench_measure; } \
    >>"$RAW/build.log" 2>&1 || die "bench_measure does not build; see $RAW/build.log"
fi
[[ -x $MEASURE ]] || die "$MEASURE is missing"
if wanted obmem; then
  if [[ -z ${BENCH_OBMEM_LIB:-} ]] && ((build_ok)); then
    if ! cmake --build "$BUILD" -j2 --target obmem-preload >>"$RAW/build.log" 2>&1; then
      [[ -f $OBMEM_LIB ]] && note "obmem-preload did not build (see $RAW/build.log): using the older $OBMEM_LIB"
      [[ -f $OBMEM_LIB ]] || say "obmem-preload did not build (see $RAW/build.log)"
    fi
  fi
  if [[ ! -f $OBMEM_LIB ]]; then
    note "obmem skipped: $OBMEM_LIB does not exist"
  else
    LIB[obmem]=$(readlink -f "$OBMEM_LIB")
    preload_works "${LIB[obmem]}" || note "obmem's preload fails or prints something on /bin/true; running it anyway"
    VERSION[obmem]=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
    [[ -n $(git -C "$ROOT" status --porcelain -- src include 2>/dev/null) ]] && VERSION[obmem]+="+changes"
    if [[ -f $BUILD/CMakeCache.txt && -z ${BENCH_OBMEM_LIB:-} ]]; then
      build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
      [[ $build_type == Release || $build_type == RelWithDebInfo ]] ||
        note "$BUILD is a '${build_type:-no type}' build: obmem's numbers are not representative"
      grep -q '^OBMEM_DEBUG:BOOL=ON' "$BUILD/CMakeCache.txt" &&
        note "$BUILD has OBMEM_DEBUG=ON: obmem's numbers are not representative"
      grep -q '^OBMEM_SANITIZE:STRING=.' "$BUILD/CMakeCache.txt" &&
        note "$BUILD is a sanitizer build: obmem's numbers are not representative"
    fi
  fi
fi

RUN_ALLOCATORS=()
for a in "${ALLOCATORS[@]}"; do
  [[ $a == pymalloc || $a == glibc || -n ${LIB[$a]:-} ]] && RUN_ALLOCATORS+=("$a")
done
((${#RUN_ALLOCATORS[@]} > 0)) || die "no allocator left to run"

# ---- run ------------------------------------------------------------------------------------

versions=""
for a in "${RUN_ALLOCATORS[@]}"; do
  versions+="$a ${VERSION[$a]:-?}${LIB[$a]:+ (${LIB[$a]})}; "
done
{
  printf 'allocators\t%s\n' "${RUN_ALLOCATORS[*]}"
  printf 'workloads\t%s\n' "${WORKLOADS[*]}"
  printf 'reps\t%s\n' "$REPS"
  printf 'scale\t%s\n' "$SCALE"
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'machine\t%s\n' "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r)"
  printf 'python\t%s\n' "$PY_VERSION ($PY${PYFLAGS:+ $PYFLAGS}; pymalloc built in: ${PY_PYMALLOC:-?})"
  printf 'obmem\t%s\n' "${VERSION[obmem]:-not run}"
  printf 'versions\t%s\n' "${versions%; }"
} >"$RAW/meta.tsv"
printf 'workload\talloc\trep\tstatus\twall\tuser\tsys\tmaxrss_kb\tchecksum\tmessage\n' >"$RAW/runs.tsv"

read -r -a PYARGS <<<"$PYFLAGS"
interrupted=0
trap 'interrupted=1' INT TERM
nallocs=${#RUN_ALLOCATORS[@]}
total=$((REPS * ${#WORKLOADS[@]} * nallocs))
count=0
start=$SECONDS
say "$PY_VERSION ($PY): running ${#WORKLOADS[@]} workloads x $nallocs allocators (${RUN_ALLOCATORS[*]}) x $REPS reps, scale $SCALE, timeout $TIMEOUT s"

declare -A TIMED_OUT=() # "workload allocator" -> 1 once a run of that cell hit the timeout
declare -A REFERENCE=() # workload -> pymalloc's checksum, for the progress lines only

run_one() { # workload allocator rep
  local w=$1 a=$2 rep=$3 base="$RAW/$1.$2.$3" pymalloc=malloc
  if [[ -n ${TIMED_OUT["$w $a"]:-} ]]; then
    count=$((count + 1))
    printf '[%3d/%d] rep %d  %-14s %-9s skipped: timed out before\n' "$count" "$total" "$rep" "$w" "$a" >&2
    return
  fi
  [[ $a == pymalloc ]] && pymalloc=pymalloc
  rm -f "$base.res"
  env -u PYTHONDEVMODE -u PYTHONTRACEMALLOC -u PYTHONMALLOCSTATS -u LD_PRELOAD \
    PYTHONMALLOC="$pymalloc" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 \
    "$MEASURE" -p "${LIB[$a]}" -t "$TIMEOUT" -o "$base.res" -- \
    "$PY" "${PYARGS[@]}" "bench/python/$w.py" "$SCALE" >"$base.out" 2>"$base.err"
  local status=error wall=0 user=0 sys=0 rss=0 checksum=- message
  [[ -s $base.res ]] && read -r _ status _ wall _ user _ sys _ rss <"$base.res"
  checksum=$(awk '$1 == "checksum" { print $2 }' "$base.out" | tail -n 1)
  message=$(grep -v '^bench_measure: ' "$base.err" | tail -n 1 | tr '\t' ' ' | cut -c1-200)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$a" "$rep" "$status" "$wall" "$user" \
    "$sys" "$rss" "${checksum:--}" "$message" >>"$RAW/runs.tsv"
  [[ -s $base.err ]] || rm -f "$base.err"
  [[ $status == timeout ]] && TIMED_OUT["$w $a"]=1
  [[ $a == pymalloc && $status == ok ]] && REFERENCE[$w]=$checksum
  [[ $status == ok && -n ${REFERENCE[$w]:-} && $checksum != "${REFERENCE[$w]}" ]] && status="wrong"
  count=$((count + 1))
  printf '[%3d/%d] rep %d  %-14s %-9s %-8s %7.3f s %8.1f MiB\n' "$count" "$total" "$rep" "$w" "$a" \
    "$status" "$wall" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" >&2
}

for ((rep = 1; rep <= REPS && !interrupted; rep++)); do
  for ((wi = 0; wi < ${#WORKLOADS[@]} && !interrupted; wi++)); do
    for ((k = 0; k < nallocs && !interrupted; k++)); do
      run_one "${WORKLOADS[$wi]}" "${RUN_ALLOCATORS[$(((k + rep + wi) % nallocs))]}" "$rep"
    done
  done
done
trap - INT TERM
((interrupted)) && note "interrupted after $count of $total runs; the tables cover those"
say "ran $count runs in $((SECONDS - start)) s"
say ""

python3 bench/python/report.py "$RAW" --out "$RESULTS/python.md" --base pymalloc || die "report.py failed"
say ""
say "written to $RESULTS/python.md"
