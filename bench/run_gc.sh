#!/usr/bin/env bash
# run_gc.sh — the cycle collector's benchmark: obmem's collector (bench/gc.c, bench_gc) beside
# CPython's gc.collect() (bench/python/gc_bench.py) on the same heap shapes, in one run.
#
# Shapes (both programs build the same objects; see bench/gc.c): N tracked objects in units
# of a small list and a mutually referencing pair, all held by one root, then all garbage;
# N from BENCH_GC_N.  Measured: a full collection of the live heap and of the garbage (ns
# per object), the young collection's pause at the threshold (µs), and, on a heap grown to
# BENCH_GC_BIG objects with old garbage cycles made along the way, each mode's total GC time,
# largest pause and peak RSS: obmem with whole collections, obmem in incremental mode
# (budget BENCH_GC_BUDGET objects per step), and CPython (whole collections; no incremental
# mode before 3.13).  Runs alternate between the programs, repetition by repetition, so that
# a noisy machine hurts both alike; the table gives medians and goes to bench/results/gc.md.
#
# Usage: bash bench/run_gc.sh    (bench/run.sh calls it at its end when it runs the CPython
#                                workloads too; BENCH_GC=0 skips it there, BENCH_GC=1 forces it)
# Environment:
#   BENCH_GC_REPS=3          runs of each measurement (each run one process)
#   BENCH_GC_N="1e6 3e6"     heap sizes of the shapes
#   BENCH_GC_BIG=1e7         heap size of the incremental comparison
#   BENCH_GC_BUDGET=1000     objects per incremental step
#   BENCH_BUILD_DIR=build    CMake build directory of the project (bench_gc is built there)
#   BENCH_PYTHON_EXE=...     the interpreter (default: python3's real executable)
# Raw outputs stay in bench/results/raw-gc/.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=bench/run_common.sh
source bench/run_common.sh

GC_REPS=${BENCH_GC_REPS:-3}
read -r -a GC_N <<<"${BENCH_GC_N:-1e6 3e6}"
GC_BIG=${BENCH_GC_BIG:-1e7}
GC_BUDGET=${BENCH_GC_BUDGET:-1000}
RAW=$RESULTS/raw-gc
[[ $GC_REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_GC_REPS must be a positive integer, not '$GC_REPS'"
[[ $GC_BUDGET =~ ^[1-9][0-9]*$ ]] || die "BENCH_GC_BUDGET must be a positive integer, not '$GC_BUDGET'"
start_raw

find_python

build_project bench_gc
GC_BIN=$BUILD/bench/bench_gc
((build_ok)) && [[ -x $GC_BIN ]] || die "bench_gc did not build (see $RAW/build.log)"
check_build_type

# run NAME COMMAND...: one run, its output appended to $RAW/NAME.out (a failure is noted)
run() {
  local name=$1
  shift
  if ! "$@" >>"$RAW/$name.out" 2>>"$RAW/$name.err"; then
    note "$name: '$*' failed (see $RAW/$name.err)"
  fi
}

say "gc benchmark: shapes N = ${GC_N[*]}, incremental on $GC_BIG objects (budget $GC_BUDGET), $GC_REPS reps; $PY_VERSION"
start=$SECONDS
for ((rep = 1; rep <= GC_REPS; rep++)); do
  for n in "${GC_N[@]}"; do
    say "  rep $rep: shapes $n"
    run obmem "$GC_BIN" shapes "$n" 1
    run cpython env -u PYTHONMALLOC -u PYTHONGC "$PY" -S bench/python/gc_bench.py shapes "$n" 1
  done
  say "  rep $rep: incremental $GC_BIG"
  run obmem_big "$GC_BIN" incremental "$GC_BIG" 0
  run obmem_big "$GC_BIN" incremental "$GC_BIG" "$GC_BUDGET"
  run cpython_big "$PY" -S bench/python/gc_bench.py incremental "$GC_BIG"
done
say "ran in $((SECONDS - start)) s"

python3 - "$RAW" "$RESULTS/gc.md" "$PY_VERSION" "$GC_BUDGET" "$(git rev-parse --short HEAD 2>/dev/null)" <<'EOF'
import os, statistics, sys
raw, out, py_version, budget, commit = sys.argv[1:6]

def lines(name):
    path = os.path.join(raw, name + ".out")
    return [l.split() for l in open(path)] if os.path.exists(path) else []

def med(values):
    return statistics.median(values) if values else float("nan")

def collect(name):
    """{(kind, n[, budget]): [values...]} from a program's output lines."""
    d = {}
    for f in lines(name):
        if f[0] in ("live", "garbage"):
            d.setdefault((f[0], int(f[1])), []).append(float(f[2]))
        elif f[0] == "young":
            d.setdefault(("young", int(f[1])), []).append(float(f[2]))
            d.setdefault(("young_max", int(f[1])), []).append(float(f[3]))
        elif f[0] == "incremental":
            key = (int(f[1]), int(f[2]))
            for i, what in enumerate(("total", "pause", "rss", "pause_cpu")):
                d.setdefault((what,) + key, []).append(float(f[3 + i]))
    return d

o = collect("obmem") | collect("obmem_big")
c = collect("cpython") | collect("cpython_big")
sizes = sorted({k[1] for k in o if k[0] == "live"} | {k[1] for k in c if k[0] == "live"})
fmt = lambda v, d=1: "n/a" if v != v else f"{v:.{d}f}"
def sci(n):  # 3000000 -> 3e6
    e = len(str(n)) - 1
    return f"{n / 10 ** e:g}e{e}"
ratio = lambda a, b: "n/a" if a != a or b != b or b == 0 else f"{a / b:.2f}x"
rows = ["| measure | N | obmem | CPython | CPython / obmem |", "| --- | ---: | ---: | ---: | ---: |"]
for kind, label, unit in (("live", "full collection, all live", "ns/object"),
                          ("garbage", "full collection, all garbage (found and freed)", "ns/object"),
                          ("young", "young collection at the threshold, median", "µs"),
                          ("young_max", "young collection at the threshold, largest", "µs")):
    for n in sizes:
        a, b = med(o.get((kind, n), [])), med(c.get((kind, n), []))
        rows.append(f"| {label} ({unit}) | {sci(n)} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} |")
big = sorted({k[1] for k in o if k[0] == "total"} | {k[1] for k in c if k[0] == "total"})
inc = ["", f"Heap grown to {sci(big[0]) if big else '?'} objects, a quarter of the units made replaced "
       "(old garbage cycles), automatic collection:", "",
       f"| measure | obmem, whole collections | obmem, incremental (budget {budget}) | incremental / whole | CPython |",
       "| --- | ---: | ---: | ---: | ---: |"]
for n in big:
    for what, label, scale in (("total", "total GC time (ms)", 1),
                               ("pause", "largest pause, wall (ms)", 1e-3),
                               ("pause_cpu", "largest pause, thread CPU time (ms)", 1e-3),
                               ("rss", "peak RSS (MiB)", 1)):
        w = med(o.get((what, n, 0), [])) * scale
        i = med(o.get((what, n, int(budget)), [])) * scale
        p = med(c.get((what, n, 0), [])) * scale
        d = 2 if what.startswith("pause") else 1
        inc.append(f"| {label} | {fmt(w, d)} | {fmt(i, d)} | {ratio(i, w)} | {fmt(p, d)} |")
notes = open(os.path.join(raw, "notes.txt")).read().strip()
text = "\n".join(
    ["# Cycle collector: obmem vs CPython's gc.collect()", "",
     f"obmem {commit or '?'}; {py_version}; medians of {len(lines('obmem_big')) // 2 or '?'} runs "
     f"(`bash bench/run_gc.sh`, also the end of `make bench`).", ""]
    + rows + inc
    + ["", "Targets (issue 4): live ≤ 20 ns/object, garbage ≤ 50 ns/object; incremental: largest "
       "pause ≤ 1 ms, total GC time and peak RSS ≤ 1.2x the whole collections'.",
       "A pause is the collector's time within one operation of the program (a young collection "
       "and a step together), as wall time (which counts preemption and stalls of the shared "
       "2-core virtual machine) and as the thread's CPU time."]
    + (["", "Notes:", ""] + ["- " + l for l in notes.splitlines()] if notes else [])) + "\n"
sys.stdout.write(text)
open(out, "w").write(text)
EOF
say ""
say "written to $RESULTS/gc.md"
