#!/usr/bin/env python3
"""report.py — turns the raw results of bench/run.sh into the benchmark tables (stdlib only).

Reads, from the raw directory run.sh filled:
  meta.tsv   key<TAB>value: allocators and workloads (in order), reps, scale, machine, versions
  runs.tsv   workload alloc rep status wall user sys maxrss_kb checksum message  (one per run;
             message: the first line the run wrote to stderr, if any)
  micro.tsv  alloc rep variant size ns                                  (bench_micro's lines)
  notes.txt  free-text notes (skipped allocators, build problems), one per line
and writes one markdown document (to --out and to stdout) with:
  1. per workload, the median wall time and median peak RSS under each allocator, and the
     ratios base/other (time and RSS; below 1 means the base allocator is faster/smaller);
     the last row holds the geometric mean of each ratio column over the workloads where
     both allocators succeeded;
  2. the microbenchmark: median ns per malloc+free pair, per size, single and batch loop;
  3. details: min/median/max wall time per cell, and what went wrong where.
A run counts as correct when its status is "ok" and its checksum equals the workload's
reference checksum: glibc's when glibc ran, else the one most runs printed.  A cell with any
failed run shows why instead of numbers: crash (killed by a signal), timeout, fail (non-zero
exit) or wrong (bad checksum), with "k/n" when only k of the n runs failed.
Usage: report.py RAW_DIR [--out FILE] [--base ALLOCATOR]
"""
import collections
import os
import statistics
import sys

# report_common.py (shared with bench/python/report.py) sits next to this file; found from the
# file's own place so that the script runs from any directory, and also under python3 -P.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_common import Results, arguments, info, notes, ratios, read_tsv, table, wall_details, write  # noqa: E402

MICRO = "micro"  # reported in its own table


def main():
    args = arguments("bench/run.sh", "obmem", "allocator the ratios are about")
    results = Results(args.raw_dir)
    results.check("glibc")  # glibc's checksums are the reference when it ran
    meta, cells, workloads = results.meta, results.cells, results.workloads

    base = args.base
    ran = results.ran()
    fallback_note = []
    if base not in ran:
        fallback = ran[-1] if ran else None
        if fallback:
            fallback_note.append(f"{base} has no results: ratios below are {fallback}/other instead.")
        base = fallback
    others = [a for a in ran if a != base]
    main_workloads = [w for w in workloads if w != MICRO]

    out = []
    out.append("# obmem allocator benchmarks")
    out.append("")
    out += info(meta, [("date", "date"), ("machine", "machine"), ("reps", "runs per cell"),
                       ("scale", "scale"), ("obmem", "obmem"), ("versions", "allocators")])
    out.append("")
    out.append(f"Median wall time and median peak RSS of {meta.get('reps', '?')} runs per cell, runs "
               "interleaved across allocators.  Ratio columns: "
               f"{base}/other, time and RSS (below 1: {base} is faster / smaller); last row: their "
               "geometric mean over the workloads where both succeeded.")
    out.append("")

    # One table: the medians, then the ratios base/other in the same row.
    header = ["workload"] + ran + [f"{base}/{a} time, RSS" for a in others]
    ratio_rows, geo, _ = ratios(results, main_workloads, [(base, a) for a in others])
    rows = [[w] + [results.cell(w, a).summary() for a in ran] + r for w, r in zip(main_workloads, ratio_rows)]
    rows.append(["**geomean**"] + [""] * len(ran) + geo)
    out += table(header, rows)
    out.append("")

    micro = collections.defaultdict(list)  # (alloc, variant, size) -> [ns]
    for row in read_tsv(os.path.join(args.raw_dir, "micro.tsv")):
        if len(row) >= 5 and row[0] != "alloc":
            a, _rep, variant, size, ns = row[:5]
            if cells.get((MICRO, a)) and cells[(MICRO, a)].usable():
                micro[(a, variant, int(size))].append(float(ns))
    if micro:
        sizes = sorted({k[2] for k in micro})
        micro_allocs = [a for a in ran if any(k[0] == a for k in micro)]
        out.append("Microbenchmark: median ns per same-thread malloc+free pair — "
                   "single (malloc, free, repeat) / batch (malloc 100, free 100).")
        out.append("")
        mrows = []
        for size in sizes:
            label = f"{size // 1048576} MiB" if size >= 1048576 else (f"{size // 1024} KiB" if size >= 1024 else f"{size} B")
            mrow = [label]
            for a in micro_allocs:
                s, b = micro.get((a, "single", size)), micro.get((a, "batch", size))
                mrow.append(f"{statistics.median(s):.1f} / {statistics.median(b):.1f}" if s and b else "–")
            mrows.append(mrow)
        out += table(["size"] + micro_allocs, mrows)
        out.append("")
    failed_micro = [a for a in ran if cells.get((MICRO, a)) and not cells[(MICRO, a)].usable()]
    if failed_micro:
        out.append("Microbenchmark failed under: " + ", ".join(f"{a} ({cells[(MICRO, a)].failure()})" for a in failed_micro))
        out.append("")

    out += wall_details(results, ran)
    out += notes(results, ran, fallback_note)
    write(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
