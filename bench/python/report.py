#!/usr/bin/env python3
"""report.py — the table of bench/run_python.sh (stdlib only).

Reads, from the raw directory run_python.sh filled:
  meta.tsv   key<TAB>value: allocators and workloads (in order), reps, scale, python, versions
  runs.tsv   workload alloc rep status wall user sys maxrss_kb checksum message  (one per run)
  notes.txt  free-text notes (skipped allocators, build problems), one per line
and writes one markdown document (to --out and to stdout) with:
  1. per workload, the median wall time and median peak RSS under each allocator;
  2. per workload, the ratios other/base (base: pymalloc) of time and of peak RSS — below 1
     means the other allocator is faster / smaller than CPython's own — and, last row, the
     geometric mean of each ratio column over the workloads where both succeeded;
  3. obmem against the targets of issue 3 (time ≤ 0.95×, peak RSS ≤ 1.00× pymalloc's);
  4. details: min / median / max wall time per cell, and what went wrong where.
A run counts as correct when its status is "ok" and its checksum equals the base allocator's
(else the most common one).  A cell with a failed run shows crash / timeout / wrong / fail.
Usage: report.py RAW_DIR [--out FILE] [--base ALLOCATOR]
"""
import os
import sys

# report_common.py (shared with bench/report.py) sits in bench/, the parent of this file's
# directory; found from the file's own place so that the script runs from any directory.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from report_common import Results, arguments, details, geomean, info, notes, ratios, table, wall_details, write  # noqa: E402

TARGET_TIME, TARGET_RSS = 0.95, 1.00  # issue 3: obmem against pymalloc


def main():
    args = arguments("bench/run_python.sh", "pymalloc", "allocator the ratios are relative to")
    results = Results(args.raw_dir)
    base = args.base
    results.check(base)  # the base allocator's checksums are the reference when it ran
    meta, workloads = results.meta, results.workloads

    ran = results.ran()
    missing_base = [] if base in ran else [f"{base} has no results: no ratios."]
    others = [a for a in ran if a != base]

    out = ["# CPython on each allocator", ""]
    out += info(meta, [("date", "date"), ("machine", "machine"), ("python", "python"),
                       ("reps", "runs per cell"), ("scale", "scale"), ("obmem", "obmem"),
                       ("versions", "allocators")])
    out.append("")
    out.append(f"`{base}`: CPython's own allocator (the default); every other column runs with "
               "`PYTHONMALLOC=malloc`, so that every object comes from malloc, and that malloc "
               "preloaded (glibc: none).  Median wall time and median peak RSS of "
               f"{meta.get('reps', '?')} interleaved runs per cell.")
    out.append("")

    out += table(["workload"] + ran, [[w] + [results.cell(w, a).summary() for a in ran] for w in workloads])
    out.append("")

    geo = {}
    if base in ran and others:
        out.append(f"Ratios other/{base}, time and peak RSS (below 1: faster / smaller than "
                   f"{base}); last row: geometric means over the workloads where both succeeded.")
        out.append("")
        ratio_rows, last, means = ratios(results, workloads, [(a, base) for a in others])
        geo = {a: means[(a, base)] for a in others if (a, base) in means}
        rows = [[w] + r for w, r in zip(workloads, ratio_rows)] + [["**geomean**"] + last]
        out += table(["workload"] + [f"{a}/{base} time, RSS" for a in others], rows)
        out.append("")

    if "obmem" in geo and base == "pymalloc":
        gt, gr = geo["obmem"]
        verdict = lambda ok: "met" if ok else "not met"
        out.append(f"Target (issue 3): obmem ≤ {TARGET_TIME:.2f}× pymalloc's time — "
                   f"{gt:.2f}×, {verdict(gt <= TARGET_TIME)}; ≤ {TARGET_RSS:.2f}× its peak RSS — "
                   f"{gr:.2f}×, {verdict(gr <= TARGET_RSS)}.")
        out.append("")

    if "obmem-install" in geo and base == "pymalloc":
        gt, gr = geo["obmem-install"]
        out.append(f"Target (issue 6): obmem.install() ≤ {TARGET_TIME:.2f}× pymalloc's time — "
                   f"{gt:.2f}×, {'met' if gt <= TARGET_TIME else 'not met'} (peak RSS "
                   f"{gr:.2f}×).")
        out.append("")

    out += wall_details(results, ran)

    # CPU time (user + sys) is less disturbed than wall time by other load on the machine.
    if base in ran and others:
        cpu_rows = []
        cpu_ratios = {a: [] for a in others}
        for w in workloads:
            row = [w]
            bcell = results.cell(w, base)
            for a in ran:
                cell = results.cell(w, a)
                if not cell.usable():
                    row.append("–")
                elif a == base or not bcell.usable():
                    row.append(f"{cell.cpu():.3f}")
                else:
                    ratio = cell.cpu() / bcell.cpu()
                    cpu_ratios[a].append(ratio)
                    row.append(f"{cell.cpu():.3f} ({ratio:.2f})")
            cpu_rows.append(row)
        last = ["**geomean**", ""]
        for a in others:
            g = geomean(cpu_ratios[a])
            last.append(f"**({g:.2f})**" if g is not None else "–")
        cpu_rows.append(last)
        out += details("Details: median CPU seconds (user + sys) and, in brackets, "
                       f"the ratio to {base} — less disturbed than wall time by other load on the "
                       "machine", ["workload"] + ran, cpu_rows)

    out += notes(results, ran, missing_base)
    write(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
