#!/usr/bin/env bash
# run_trace.sh — what tracing costs: the engine's C workloads untraced and traced.
#
# Each bench_<workload> runs under bench_measure (wall time, peak RSS) in these modes:
#   obmem      libobmem-preload.so, untraced                       (the base of exact, sampled)
#   exact      the same with OBMEM_TRACE (every allocation and free, native stacks: auto)
#   sampled    OBMEM_TRACE and OBMEM_TRACE_SAMPLE=$BENCH_TRACE_SAMPLE (default 524288 bytes)
#   glibc      glibc's malloc, no preload                          (the base of heaptrack, massif)
#   dispatch   exact mode's allocation path with hooks that record nothing   } exact mode's
#   events     the hooks record events without stacks; the writer drops them } cost by parts
#   stacks     the hooks record events with native stacks; the writer drops  } (ratios to obmem;
#              them (exact = stacks + the writer's coding, zstd and writes)  } OBMEM_TEST_TRACE_PARTS)
#   heaptrack  heaptrack (its own LD_PRELOAD tracer over glibc's malloc)
#   massif     valgrind --tool=massif
# interleaved rep by rep with the mode order rotated (run_common.sh's way), then prints per
# workload the median times, the slowdown ratios exact/obmem, sampled/obmem, heaptrack/glibc,
# massif/glibc, dispatch, events and stacks / obmem, exact/glibc (what a program's user sees:
# obmem run against the program on its own malloc) with their geometric means, and each tool's output bytes per event (events =
# allocations + frees: obmem's from `obmem report --json`; heaptrack's and massif's as twice
# the allocation calls heaptrack_print counts, the workloads free what they allocate).
# heaptrack and massif are slow: they run BENCH_TRACE_SLOW_REPS times (default 1).
#
# Usage: bash bench/run_trace.sh [WORKLOAD...]   (`make bench` runs it after bench/run.sh)
# Environment: BENCH_REPS (5), BENCH_SCALE (1), BENCH_TIMEOUT, BENCH_BUILD_DIR, BENCH_OBMEM_LIB,
#   BENCH_NO_INSTALL as bench/run.sh; BENCH_TRACE_MODES (all of the above),
#   BENCH_TRACE_SAMPLE, BENCH_TRACE_SLOW_REPS.
# Missing Debian packages (heaptrack, valgrind) are installed with apt-get when running as
# root; a tool that cannot be had is skipped with a note.  Raw results: bench/results/raw-trace/.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=bench/run_common.sh
source bench/run_common.sh

ALL_WORKLOADS=(random lifo fifo trees realloc threads prodcons server)
ALL_MODES=(obmem exact sampled dispatch events stacks glibc heaptrack massif)
RAW=$RESULTS/raw-trace
SAMPLE=${BENCH_TRACE_SAMPLE:-524288}
SLOW_REPS=${BENCH_TRACE_SLOW_REPS:-1}
split_list MODES "${BENCH_TRACE_MODES:-${ALL_MODES[*]}}"
pick_workloads "${BENCH_WORKLOADS:-${ALL_WORKLOADS[*]}}" "$@"
check_settings 600
start_raw

has_mode() { [[ " ${MODES[*]} " == *" $1 "* ]]; }

# ---- the tools ------------------------------------------------------------------------------

install_tools() {
  local missing=() tool
  has_mode heaptrack && ! command -v heaptrack >/dev/null && missing+=(heaptrack)
  has_mode massif && ! command -v valgrind >/dev/null && missing+=(valgrind)
  ((${#missing[@]} > 0)) || return 0
  if [[ ${BENCH_NO_INSTALL:-0} == 1 || $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    say "cannot install ${missing[*]} (needs root and apt-get, and no BENCH_NO_INSTALL=1)"
  else
    say "installing ${missing[*]} with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$RAW/apt.log" 2>&1 || say "apt-get update failed (see $RAW/apt.log)"
    for tool in "${missing[@]}"; do
      apt-get install -y -qq "$tool" >>"$RAW/apt.log" 2>&1 || say "apt-get install $tool failed"
    done
  fi
}
install_tools
keep=()
for m in "${MODES[@]}"; do
  case $m in
  heaptrack) command -v heaptrack >/dev/null || { note "heaptrack skipped: not installed"; continue; } ;;
  massif) command -v valgrind >/dev/null || { note "massif skipped: valgrind not installed"; continue; } ;;
  esac
  keep+=("$m")
done
MODES=("${keep[@]}")

BIN=$BUILD/bench
build_project bench_programs
((build_ok)) || die "the build failed (see $RAW/build.log)"
cmake --build "$BUILD" -j2 --target obmem-preload obmem-cli bench_measure >>"$RAW/build.log" 2>&1 ||
  die "the build failed (see $RAW/build.log)"
check_build_type
OBMEM=$BUILD/tools/obmem
MEASURE=$BIN/bench_measure
PRELOAD=$(readlink -f "$OBMEM_LIB")

# ---- runs -----------------------------------------------------------------------------------

# run_mode WORKLOAD MODE REP: one measured run; its output file (capture, profile) in BASE.data.
run_mode() {
  local w=$1 m=$2 base=$RAW/$1-$2-$3 prog=$BIN/bench_$1
  local -a cmd=("$MEASURE" -t "$TIMEOUT" -o "$base.res")
  case $m in
  obmem) cmd+=(-p "$PRELOAD" -- "$prog" "$SCALE") ;;
  exact) cmd=(env OBMEM_TRACE="$base.data" "${cmd[@]}" -p "$PRELOAD" -- "$prog" "$SCALE") ;;
  sampled) cmd=(env OBMEM_TRACE="$base.data" OBMEM_TRACE_SAMPLE="$SAMPLE" "${cmd[@]}" -p "$PRELOAD" -- "$prog" "$SCALE") ;;
  dispatch) cmd=(env OBMEM_TRACE="$base.data" OBMEM_TEST_TRACE_PARTS=dispatch "${cmd[@]}" -p "$PRELOAD" -- "$prog" "$SCALE") ;;
  events) cmd=(env OBMEM_TRACE="$base.data" OBMEM_TEST_TRACE_PARTS=events OBMEM_TRACE_STACKS=none "${cmd[@]}" -p "$PRELOAD" -- "$prog" "$SCALE") ;;
  stacks) cmd=(env OBMEM_TRACE="$base.data" OBMEM_TEST_TRACE_PARTS=events "${cmd[@]}" -p "$PRELOAD" -- "$prog" "$SCALE") ;;
  glibc) cmd+=(-- "$prog" "$SCALE") ;;
  heaptrack) cmd+=(-- heaptrack -o "$base.data" "$prog" "$SCALE") ;;
  massif) cmd+=(-- valgrind --tool=massif --massif-out-file="$base.data" "$prog" "$SCALE") ;;
  esac
  "${cmd[@]}" >"$base.out" 2>"$base.err"
  local wall
  wall=$(awk '{ for (i = 1; i < NF; i++) if ($i == "wall") print $(i + 1) }' "$base.res" 2>/dev/null)
  local status
  status=$(awk '{ print $2 }' "$base.res" 2>/dev/null)
  local data bytes=0
  data=$(ls "$base".data* 2>/dev/null | head -n 1)
  [[ -n $data ]] && bytes=$(stat -c %s "$data")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$m" "$3" "${status:-none}" "${wall:-0}" "$bytes" >>"$RAW/runs.tsv"
  # the events behind the output, once per workload and mode
  if [[ $3 == 1 && -n $data ]]; then
    case $m in
    exact | sampled)
      "$OBMEM" report --json --no-progress "$data" 2>/dev/null |
        awk -F'[:,]' '/"allocations"/ { a = $2 } /"frees"/ { f = $2 } END { print a + f }' >"$base.events" ;;
    heaptrack)
      heaptrack_print -f "$data" 2>/dev/null | awk '/calls to allocation functions:/ { print 2 * $5 }' >"$base.events" ;;
    esac
  fi
  rm -f "$base".data* 2>/dev/null
  [[ $m == exact || $m == sampled || $m == dispatch || $m == events || $m == stacks ]] && rm -f "$base".data* "$RAW"/*.data.* 2>/dev/null
  say "  $w $m #$3: ${status:-none} ${wall:-?} s, ${bytes} bytes of output"
}

for ((rep = 1; rep <= REPS; rep++)); do
  for w in "${WORKLOADS[@]}"; do
    n=${#MODES[@]}
    for ((k = 0; k < n; k++)); do
      m=${MODES[$(((k + rep) % n))]}
      if [[ $m == heaptrack || $m == massif ]] && ((rep > SLOW_REPS)); then continue; fi
      run_mode "$w" "$m" "$rep"
    done
  done
done

# massif's events: heaptrack's count when it ran, else the glibc run is not traced: unknown
for w in "${WORKLOADS[@]}"; do
  [[ -f $RAW/$w-heaptrack-1.events ]] && cp "$RAW/$w-heaptrack-1.events" "$RAW/$w-massif-1.events"
done

# ---- the table ------------------------------------------------------------------------------

python3 - "$RAW" "${WORKLOADS[*]}" "${MODES[*]}" <<'EOF' | tee "$RESULTS/trace.md"
import math, os, statistics, sys
raw, workloads, modes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs = {}
for line in open(os.path.join(raw, "runs.tsv")):
    w, m, rep, status, wall, size = line.rstrip("\n").split("\t")
    if status == "ok":
        runs.setdefault((w, m), []).append((float(wall), int(size)))
def median(w, m):
    r = runs.get((w, m))
    return statistics.median(x[0] for x in r) if r else None
def events(w, m):
    try:
        return int(open(os.path.join(raw, f"{w}-{m}-1.events")).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
ratios = [("exact", "obmem"), ("sampled", "obmem"), ("dispatch", "obmem"), ("events", "obmem"),
          ("stacks", "obmem"), ("exact", "glibc"), ("heaptrack", "glibc"), ("massif", "glibc")]
ratios = [(a, b) for a, b in ratios if a in modes and b in modes]
head = ["workload"] + [f"{m} s" for m in modes] + [f"{a}/{b}" for a, b in ratios] + \
       [f"{m} B/event" for m in ("exact", "sampled", "heaptrack", "massif") if m in modes]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
logs = {r: [] for r in ratios}
for w in workloads:
    row = [w]
    for m in modes:
        t = median(w, m)
        row.append(f"{t:.3f}" if t is not None else "–")
    for a, b in ratios:
        ta, tb = median(w, a), median(w, b)
        if ta and tb:
            logs[(a, b)].append(math.log(ta / tb))
            row.append(f"{ta / tb:.2f}x")
        else:
            row.append("–")
    for m in ("exact", "sampled", "heaptrack", "massif"):
        if m not in modes:
            continue
        r, e = runs.get((w, m)), events(w, m)
        row.append(f"{r[0][1] / e:.2f}" if r and e else "–")
    print("| " + " | ".join(row) + " |")
row = ["geometric mean"] + [""] * len(modes)
for r in ratios:
    row.append(f"{math.exp(statistics.mean(logs[r])):.2f}x" if logs[r] else "–")
row += [""] * (len(head) - len(row))
print("| " + " | ".join(row) + " |")
EOF
say ""
say "written to $RESULTS/trace.md (raw runs in $RAW)"
