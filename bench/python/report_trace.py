#!/usr/bin/env python3
"""report_trace.py — the tables of bench/run_python_trace.sh (stdlib only).

Reads the raw directory (meta.tsv, runs.tsv, notes.txt, as bench/python/report.py does) and
writes one markdown document (to --out and stdout):
  1. per workload, the median wall time and peak RSS of each mode;
  2. the ratios traced/untraced — obmem-N to obmem (obmem.install() untraced), tmalloc-N to
     pymalloc — of wall time and peak RSS, then of CPU time (user + sys, less disturbed by
     other load on a shared machine), each with geometric means;
  3. issue 6's targets for obmem with full stacks (the largest exact obmem-N): geometric mean
     of time <= 1.3x, no workload above 2x, peak RSS <= 1.2x; and for the sampled mode
     (obmem-N-sBYTES): geometric mean of time <= 1.05x;
  4. details (min / median / max wall) and notes.
Usage: report_trace.py RAW_DIR [--out FILE]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from report_common import Results, arguments, geomean, info, notes, ratios, table, wall_details, write  # noqa: E402

TARGET_TIME, TARGET_MAX, TARGET_RSS = 1.3, 2.0, 1.2  # issue 6, obmem exact with full stacks
TARGET_SAMPLED = 1.05  # issue 6, obmem sampled


def base_of(mode):
    return "obmem" if mode.startswith("obmem") else "pymalloc"


def main():
    args = arguments("bench/run_python_trace.sh", "obmem", "unused (each mode has its own base)")
    results = Results(args.raw_dir)
    ran = results.ran()
    for base in ("obmem", "pymalloc"):
        if base in ran:
            results.check(base)
    workloads = results.workloads
    traced = [m for m in ran if m not in ("obmem", "pymalloc") and base_of(m) in ran]

    out = ["# The cost of Python-level tracing: obmem.start() and tracemalloc", ""]
    out += info(results.meta, [("date", "date"), ("machine", "machine"), ("python", "python"),
                               ("reps", "runs per cell"), ("scale", "scale"), ("obmem", "obmem")])
    out.append("")
    out.append("`obmem`: `obmem.install()`, untraced; `obmem-N`: then `obmem.start(N)`; "
               "`obmem-N-sBYTES`: `obmem.start(N, sample=BYTES)` (sampled); "
               "`pymalloc`: CPython's own allocator, untraced; `tmalloc-N`: "
               "`tracemalloc.start(N)` on it.  Median wall time and peak RSS of "
               f"{results.meta.get('reps', '?')} interleaved runs per cell.")
    out.append("")
    out += table(["workload"] + ran, [[w] + [results.cell(w, a).summary() for a in ran] for w in workloads])
    out.append("")

    means = {}
    if traced:
        pairs = [(m, base_of(m)) for m in traced]
        rows, last, means = ratios(results, workloads, pairs)
        out.append("Ratios traced/untraced (obmem-N / obmem, tmalloc-N / pymalloc): wall time, "
                   "peak RSS; last row: geometric means.")
        out.append("")
        out += table(["workload"] + [f"{m} time, RSS" for m in traced],
                     [[w] + r for w, r in zip(workloads, rows)] + [["**geomean**"] + last])
        out.append("")
        cpu_rows, cpu = [], {m: [] for m in traced}
        for w in workloads:
            row = [w]
            for m in traced:
                num, den = results.cell(w, m), results.cell(w, base_of(m))
                if num.usable() and den.usable() and den.cpu() > 0:
                    r = num.cpu() / den.cpu()
                    cpu[m].append(r)
                    row.append(f"{r:.2f}")
                else:
                    row.append("–")
            cpu_rows.append(row)
        cpu_rows.append(["**geomean**"] + [f"**{geomean(cpu[m]):.2f}**" if cpu[m] else "–" for m in traced])
        out.append("CPU time (user + sys) ratios, same pairs.")
        out.append("")
        out += table(["workload"] + [f"{m} CPU" for m in traced], cpu_rows)
        out.append("")

    full = [m for m in traced if m.startswith("obmem-") and "-s" not in m]
    if full:
        m = max(full, key=lambda x: int(x.split("-")[1]))
        if (m, "obmem") in means:
            gt, gr = means[(m, "obmem")]
            worst = max((results.cell(w, m).time() / results.cell(w, "obmem").time(), w)
                        for w in workloads
                        if results.cell(w, m).usable() and results.cell(w, "obmem").usable())
            verdict = lambda ok: "met" if ok else "not met"
            out.append(f"Targets (issue 6), obmem exact with full stacks ({m}): geometric mean "
                       f"≤ {TARGET_TIME}× untraced — {gt:.2f}×, {verdict(gt <= TARGET_TIME)}; no "
                       f"workload above {TARGET_MAX}× — worst {worst[0]:.2f}× ({worst[1]}), "
                       f"{verdict(worst[0] <= TARGET_MAX)}; peak RSS ≤ {TARGET_RSS}× — "
                       f"{gr:.2f}×, {verdict(gr <= TARGET_RSS)}.")
            out.append("")

    for m in [m for m in traced if m.startswith("obmem-") and "-s" in m]:
        if (m, "obmem") in means:
            gt, gr = means[(m, "obmem")]
            cpu_mean = geomean(cpu[m]) if cpu.get(m) else float("nan")
            out.append(f"Target (issue 6), obmem sampled ({m}): geometric mean ≤ {TARGET_SAMPLED}× "
                       f"untraced — {gt:.2f}× wall ({cpu_mean:.2f}× CPU), "
                       f"{'met' if gt <= TARGET_SAMPLED else 'not met'}; peak RSS {gr:.2f}×.")
            out.append("")

    out += wall_details(results, ran)
    out += notes(results, ran)
    write(out, args.out)


if __name__ == "__main__":
    main()
