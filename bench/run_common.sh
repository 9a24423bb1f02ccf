# run_common.sh — what bench/run.sh and bench/run_python.sh share; sourced by both, not run.
#
# Both scripts run workload programs under a list of allocators, each swapped in with
# LD_PRELOAD by bench_measure (bench/measure.c), interleaved — repetition by repetition,
# workload by workload, with the allocator order rotated each time — so that the noise of a
# shared machine spreads evenly over the allocators, and both leave the same raw files
# (meta.tsv, runs.tsv, notes.txt) for their report.  What differs stays in the scripts: the
# workloads and how one is started, the allocators known (run_python.sh adds pymalloc, CPython's
# own), what the build must provide, and the report.
#
# A script cds to the project's root, sources this file (which reads the settings both share:
# BENCH_REPS, BENCH_SCALE, BENCH_TIMEOUT, BENCH_BUILD_DIR, BENCH_OBMEM_LIB, BENCH_NO_INSTALL),
# and sets:
#   ALL_WORKLOADS, KNOWN_ALLOCATORS   what it can run
#   WORKLOADS, ALLOCATORS             what it was asked to (split_list, pick_workloads)
#   RAW                               its raw directory (emptied by start_raw)
#   LIB                               an empty entry for each allocator that needs no preload
#                                     library (glibc; pymalloc); find_* add the others
#   MEASURE, and for run_all: REFERENCE_ALLOCATOR (whose checksum the progress lines compare
#   with), NAME_WIDTH (of the workload column of the progress lines), MESSAGE_LINE (head or
#   tail: which line of a run's stderr runs.tsv keeps) and a function
#   run_workload WORKLOAD ALLOCATOR REP BASE, which starts one run under $MEASURE, with output
#   in BASE.res, BASE.out and BASE.err.
# shellcheck shell=bash disable=SC2034 # the variables set here are read by the scripts

REPS=${BENCH_REPS:-5}
SCALE=${BENCH_SCALE:-1}
TIMEOUT=${BENCH_TIMEOUT:-}
BUILD=${BENCH_BUILD_DIR:-build}
OBMEM_LIB=${BENCH_OBMEM_LIB:-$BUILD/libobmem-preload.so}
RESULTS=bench/results

say() { printf '%s\n' "$*" >&2; }
die() {
  say "bench/${0##*/}: $*"
  exit 2
}

# split_list NAME VALUE: the array NAME holds VALUE's comma- or space-separated words.
split_list() { read -r -a "$1" <<<"$(tr ',' ' ' <<<"$2")"; }

# The Python workloads of bench/python/ (run_python.sh, run_python_trace.sh).
PYTHON_WORKLOADS=(churn containers json_roundtrip instances strings cycles mixed)

# pick_workloads SETTING [ARGUMENT...]: WORKLOADS are the script's arguments, if any, else the
# words of SETTING (BENCH_WORKLOADS or its default); each must be one of ALL_WORKLOADS.
pick_workloads() {
  local setting=$1 w
  shift
  if (($# > 0)); then
    WORKLOADS=("$@")
  else
    split_list WORKLOADS "$setting"
  fi
  for w in "${WORKLOADS[@]}"; do
    [[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || die "unknown workload '$w' (known: ${ALL_WORKLOADS[*]})"
  done
}

# check_settings SECONDS: BENCH_REPS and BENCH_SCALE are sane; TIMEOUT defaults to SECONDS x
# max(1, scale), rounded up, so that a scaled-up run is not killed for its size.
check_settings() {
  [[ $REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive integer, not '$REPS'"
  [[ $SCALE =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && awk -v s="$SCALE" 'BEGIN { exit !(s > 0) }' ||
    die "BENCH_SCALE must be a positive number, not '$SCALE'"
  [[ -n $TIMEOUT ]] ||
    TIMEOUT=$(awk -v s="$SCALE" -v b="$1" 'BEGIN { t = b * (s > 1 ? s : 1); printf "%d", t == int(t) ? t : int(t) + 1 }')
  [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT must be a positive integer (seconds), not '$TIMEOUT'"
}

check_allocators() {
  local a
  for a in "${ALLOCATORS[@]}"; do
    [[ " ${KNOWN_ALLOCATORS[*]} " == *" $a "* ]] || die "unknown allocator '$a' (known: ${KNOWN_ALLOCATORS[*]})"
  done
}

# find_python: PY, the interpreter the Python benchmarks run (BENCH_PYTHON_EXE, else the real
# binary behind `python3`, not a wrapper script such as pyenv's shim), and PY_VERSION.
find_python() {
  if [[ -n ${BENCH_PYTHON_EXE:-} ]]; then
    PY=$BENCH_PYTHON_EXE
  else
    command -v python3 >/dev/null || die "python3 is not installed"
    PY=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
  fi
  [[ -x $PY ]] || PY=$(command -v "$PY") || die "no interpreter at '$PY'"
  PY_VERSION=$("$PY" --version 2>&1)
}

# start_raw: an empty raw directory, so that no file of an earlier run is taken for this one's.
start_raw() {
  rm -rf "$RAW"
  mkdir -p "$RAW"
  NOTES=$RAW/notes.txt
  : >"$NOTES"
}

# A note goes to stderr now and, through notes.txt, into the report.
note() {
  say "note: $*"
  printf '%s\n' "$*" >>"$NOTES"
}

# ---- the allocators -------------------------------------------------------------------------

declare -A DEV_PACKAGE=([mimalloc]=libmimalloc-dev [jemalloc]=libjemalloc-dev [tcmalloc]=libgoogle-perftools-dev)
declare -A LIB_NAME=([mimalloc]=libmimalloc [jemalloc]=libjemalloc [tcmalloc]=libtcmalloc_minimal)
declare -A LIB=()     # allocator -> its preload library ("" for the ones that need none)
declare -A VERSION=() # allocator -> its version, for the report

wanted() { [[ " ${ALLOCATORS[*]} " == *" $1 "* ]]; }

# Missing -dev packages of the wanted allocators are installed when running as root with
# apt-get; else (or with BENCH_NO_INSTALL=1) find_allocators skips those allocators.
install_missing() {
  local a pkg missing=()
  for a in mimalloc jemalloc tcmalloc; do
    wanted "$a" || continue
    dpkg-query -W -f='${Status}' "${DEV_PACKAGE[$a]}" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("${DEV_PACKAGE[$a]}")
  done
  ((${#missing[@]} > 0)) || return 0
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
}

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

# find_allocators: LIB and VERSION of the wanted packaged allocators (mimalloc, jemalloc,
# tcmalloc) that can be had, a note for each one that cannot; VERSION of glibc.
find_allocators() {
  local a lib
  install_missing
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
}

# ---- build ----------------------------------------------------------------------------------

# build_project TARGET: configures $BUILD if it has no cache yet and builds TARGET there;
# build_ok=0 when either fails (the library may be mid-change: the scripts fall back to
# building what they need of bench/ on its own).
build_project() {
  build_ok=1
  if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    say "configuring $BUILD ..."
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$RAW/build.log" 2>&1 || build_ok=0
  fi
  if ((build_ok)); then
    cmake --build "$BUILD" -j2 --target "$1" >>"$RAW/build.log" 2>&1 || build_ok=0
  fi
}

# find_obmem: LIB and VERSION of obmem when it is wanted.  The preload library is rebuilt
# first unless BENCH_OBMEM_LIB names one or the project did not build; an older library is
# still used then, with a note, as the tables say which commit they measured.
find_obmem() {
  wanted obmem || return 0
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
  return 0
}

# A note when $BUILD is not built for speed: obmem's numbers would not mean much.
check_build_type() {
  local build_type
  build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
  [[ $build_type == Release || $build_type == RelWithDebInfo ]] ||
    note "$BUILD is a '${build_type:-no type}' build: obmem's numbers are not representative"
  grep -q '^OBMEM_DEBUG:BOOL=ON' "$BUILD/CMakeCache.txt" &&
    note "$BUILD has OBMEM_DEBUG=ON: obmem's numbers are not representative"
  grep -q '^OBMEM_SANITIZE:STRING=.' "$BUILD/CMakeCache.txt" &&
    note "$BUILD is a sanitizer build: obmem's numbers are not representative"
  return 0
}

# RUN_ALLOCATORS: the wanted allocators that have an entry in LIB (the skipped ones have none).
pick_run_allocators() {
  local a
  RUN_ALLOCATORS=()
  for a in "${ALLOCATORS[@]}"; do
    [[ -n ${LIB[$a]+set} ]] && RUN_ALLOCATORS+=("$a")
  done
  ((${#RUN_ALLOCATORS[@]} > 0)) || die "no allocator left to run"
}

# ---- run ------------------------------------------------------------------------------------

# shellcheck disable=SC2120 # the extra keys are optional
# write_meta [KEY VALUE]...: meta.tsv for the report (extra keys after the machine's) and the
# header of runs.tsv.
write_meta() {
  local a versions=""
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
    while (($# >= 2)); do
      printf '%s\t%s\n' "$1" "$2"
      shift 2
    done
    printf 'obmem\t%s\n' "${VERSION[obmem]:-not run}"
    printf 'versions\t%s\n' "${versions%; }"
  } >"$RAW/meta.tsv"
  printf 'workload\talloc\trep\tstatus\twall\tuser\tsys\tmaxrss_kb\tchecksum\tmessage\n' >"$RAW/runs.tsv"
}

run_one() { # workload allocator rep
  local w=$1 a=$2 rep=$3 base="$RAW/$1.$2.$3"
  if [[ -n ${TIMED_OUT["$w $a"]:-} ]]; then
    count=$((count + 1))
    printf '[%3d/%d] rep %d  %-*s %-9s skipped: timed out before\n' "$count" "$total" "$rep" \
      "$NAME_WIDTH" "$w" "$a" >&2
    return
  fi
  rm -f "$base.res"
  run_workload "$w" "$a" "$rep" "$base"
  local status=error wall=0 user=0 sys=0 rss=0 checksum=- message
  [[ -s $base.res ]] && read -r _ status _ wall _ user _ sys _ rss <"$base.res"
  checksum=$(awk '$1 == "checksum" { print $2 }' "$base.out" | tail -n 1)
  message=$(grep -v '^bench_measure: ' "$base.err" | "$MESSAGE_LINE" -n 1 | tr '\t' ' ' | cut -c1-200)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$a" "$rep" "$status" "$wall" "$user" \
    "$sys" "$rss" "${checksum:--}" "$message" >>"$RAW/runs.tsv"
  [[ -s $base.err ]] || rm -f "$base.err"
  [[ $status == timeout ]] && TIMED_OUT["$w $a"]=1
  [[ $a == "$REFERENCE_ALLOCATOR" && $status == ok ]] && REFERENCE[$w]=$checksum
  [[ $status == ok && -n ${REFERENCE[$w]:-} && $checksum != "${REFERENCE[$w]}" ]] && status="wrong"
  count=$((count + 1))
  printf '[%3d/%d] rep %d  %-*s %-9s %-8s %7.3f s %8.1f MiB\n' "$count" "$total" "$rep" \
    "$NAME_WIDTH" "$w" "$a" "$status" "$wall" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" >&2
}

# shellcheck disable=SC2120 # the prefix is optional
# run_all [PREFIX]: every workload under every allocator of RUN_ALLOCATORS, REPS times, with a
# progress line per run (after PREFIX's first line); an interrupt (^C) stops after the current
# run and leaves interrupted=1, so that the report covers the runs made.
run_all() {
  local rep wi k
  interrupted=0
  trap 'interrupted=1' INT TERM
  nallocs=${#RUN_ALLOCATORS[@]}
  total=$((REPS * ${#WORKLOADS[@]} * nallocs))
  count=0
  start=$SECONDS
  say "${1:-}running ${#WORKLOADS[@]} workloads x $nallocs allocators (${RUN_ALLOCATORS[*]}) x $REPS reps, scale $SCALE, timeout $TIMEOUT s"

  declare -gA TIMED_OUT=() # "workload allocator" -> 1 once a run of that cell hit the timeout
  declare -gA REFERENCE=() # workload -> the reference allocator's checksum, for the progress lines only

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
}
