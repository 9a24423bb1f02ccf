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
# Raw results (every run's output, runs.tsv, micro.tsv) stay in bench/results/raw/.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

ALL_WORKLOADS=(random lifo fifo trees realloc align large huge threads prodcons server micro)
REPS=${BENCH_REPS:-5}
SCALE=${BENCH_SCALE:-1}
TIMEOUT=${BENCH_TIMEOUT:-}
BUILD=${BENCH_BUILD_DIR:-build}
OBMEM_LIB=${BENCH_OBMEM_LIB:-$BUILD/libobmem-preload.so}
RESULTS=bench/results
RAW=$RESULTS/raw
read -r -a ALLOCATORS <<<"$(tr ',' ' ' <<<"${BENCH_ALLOCATORS:-glibc mimalloc jemalloc tcmalloc obmem}")"
if (($# > 0)); then
  WORKLOADS=("$@")
else
  read -r -a WORKLOADS <<<"$(tr ',' ' ' <<<"${BENCH_WORKLOADS:-${ALL_WORKLOADS[*]}}")"
fi

say() { printf '%s\n' "$*" >&2; }
die() {
  say "bench/run.sh: $*"
  exit 2
}

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive integer, not '$REPS'"
[[ $SCALE =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && awk -v s="$SCALE" 'BEGIN { exit !(s > 0) }' ||
  die "BENCH_SCALE must be a positive number, not '$SCALE'"
[[ -n $TIMEOUT ]] || TIMEOUT=$(awk -v s="$SCALE" 'BEGIN { t = 60 * (s > 1 ? s : 1); printf "%d", t == int(t) ? t : int(t) + 1 }')
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT must be a positive integer (seconds), not '$TIMEOUT'"
for w in "${WORKLOADS[@]}"; do
  [[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || die "unknown workload '$w' (known: ${ALL_WORKLOADS[*]})"
done
for a in "${ALLOCATORS[@]}"; do
  case $a in glibc | mimalloc | jemalloc | tcmalloc | obmem) ;;
  *) die "unknown allocator '$a' (known: glibc mimalloc jemalloc tcmalloc obmem)" ;;
  esac
done
command -v python3 >/dev/null || die "python3 is needed for the report"

rm -rf "$RAW"
mkdir -p "$RAW"
NOTES=$RAW/notes.txt
: >"$NOTES"
note() {
  say "note: $*"
  printf '%s\n' "$*" >>"$NOTES"
}

# ---- the allocators -------------------------------------------------------------------------

declare -A DEV_PACKAGE=([mimalloc]=libmimalloc-dev [jemalloc]=libjemalloc-dev [tcmalloc]=libgoogle-perftools-dev)
declare -A LIB_NAME=([mimalloc]=libmimalloc [jemalloc]=libjemalloc [tcmalloc]=libtcmalloc_minimal)
declare -A LIB=([glibc]="")
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

# ---- build ----------------------------------------------------------------------------------

BIN=$BUILD/bench
build_ok=1
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  say "configuring $BUILD ..."
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$RAW/build.log" 2>&1 || build_ok=0
fi
if ((build_ok)); then
  cmake --build "$BUILD" -j2 --target bench_programs >>"$RAW/build.log" 2>&1 || build_ok=0
fi
if ((!build_ok)); then
  # The library may be mid-change; the workloads do not need it.
  note "the project did not build (see bench/results/raw/build.log); workloads built on their own"
  BIN=$BUILD/bench-standalone
  { cmake -S bench -B "$BIN" -DCMAKE_BUILD_TYPE=Release && cmake --build "$BIN" -j2; } \
    >>"$RAW/build.log" 2>&1 || die "the benchmark programs do not build; see $RAW/build.log"
fi
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
  fi
fi
MEASURE=$BIN/bench_measure
if ((build_ok)); then
  build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
  [[ $build_type == Release || $build_type == RelWithDebInfo ]] ||
    note "$BUILD is a '${build_type:-no type}' build: obmem's numbers are not representative"
  grep -q '^OBMEM_DEBUG:BOOL=ON' "$BUILD/CMakeCache.txt" &&
    note "$BUILD has OBMEM_DEBUG=ON: obmem's numbers are not representative"
  grep -q '^OBMEM_SANITIZE:STRING=.' "$BUILD/CMakeCache.txt" &&
    note "$BUILD is a sanitizer build: obmem's numbers are not representative"
fi
[[ -x $MEASURE ]] || die "$MEASURE is missing"

RUN_ALLOCATORS=()
for a in "${ALLOCATORS[@]}"; do
  [[ $a == glibc || -n ${LIB[$a]:-} ]] && RUN_ALLOCATORS+=("$a")
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
  printf 'obmem\t%s\n' "${VERSION[obmem]:-not run}"
  printf 'versions\t%s\n' "${versions%; }"
} >"$RAW/meta.tsv"
printf 'workload\talloc\trep\tstatus\twall\tuser\tsys\tmaxrss_kb\tchecksum\tmessage\n' >"$RAW/runs.tsv"
printf 'alloc\trep\tvariant\tsize\tns\n' >"$RAW/micro.tsv"

interrupted=0
trap 'interrupted=1' INT TERM
nallocs=${#RUN_ALLOCATORS[@]}
total=$((REPS * ${#WORKLOADS[@]} * nallocs))
count=0
start=$SECONDS
say "running ${#WORKLOADS[@]} workloads x $nallocs allocators (${RUN_ALLOCATORS[*]}) x $REPS reps, scale $SCALE, timeout $TIMEOUT s"

declare -A TIMED_OUT=() # "workload allocator" -> 1 once a run of that cell hit the timeout
declare -A REFERENCE=() # workload -> glibc's checksum, for the progress lines only

run_one() { # workload allocator rep
  local w=$1 a=$2 rep=$3 base="$RAW/$1.$2.$3"
  if [[ -n ${TIMED_OUT["$w $a"]:-} ]]; then
    count=$((count + 1))
    printf '[%3d/%d] rep %d  %-9s %-9s skipped: timed out before\n' "$count" "$total" "$rep" "$w" "$a" >&2
    return
  fi
  rm -f "$base.res"
  "$MEASURE" -p "${LIB[$a]}" -t "$TIMEOUT" -o "$base.res" -- "$BIN/bench_$w" "$SCALE" \
    >"$base.out" 2>"$base.err"
  local status=error wall=0 user=0 sys=0 rss=0 checksum=- message
  [[ -s $base.res ]] && read -r _ status _ wall _ user _ sys _ rss <"$base.res"
  checksum=$(awk '$1 == "checksum" { print $2 }' "$base.out" | tail -n 1)
  message=$(grep -v '^bench_measure: ' "$base.err" | head -n 1 | tr '\t' ' ' | cut -c1-200)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$a" "$rep" "$status" "$wall" "$user" \
    "$sys" "$rss" "${checksum:--}" "$message" >>"$RAW/runs.tsv"
  if [[ $w == micro ]]; then
    awk -v a="$a" -v r="$rep" '$1 == "ns" { printf "%s\t%s\t%s\t%s\t%s\n", a, r, $2, $3, $4 }' \
      "$base.out" >>"$RAW/micro.tsv"
  fi
  [[ -s $base.err ]] || rm -f "$base.err"
  [[ $status == timeout ]] && TIMED_OUT["$w $a"]=1
  [[ $a == glibc && $status == ok ]] && REFERENCE[$w]=$checksum
  [[ $status == ok && -n ${REFERENCE[$w]:-} && $checksum != "${REFERENCE[$w]}" ]] && status="wrong"
  count=$((count + 1))
  printf '[%3d/%d] rep %d  %-9s %-9s %-8s %7.3f s %8.1f MiB\n' "$count" "$total" "$rep" "$w" "$a" \
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
