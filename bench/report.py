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
import argparse
import collections
import math
import os
import signal
import statistics
import sys

MICRO = "micro"  # reported in its own table


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def describe(status):
    """signal:11 -> 'crash (SIGSEGV)', exit:3 -> 'exit status 3'."""
    if status.startswith("signal:"):
        number = int(status.split(":")[1])
        try:
            return f"crash ({signal.Signals(number).name})"
        except ValueError:
            return f"crash (signal {number})"
    if status.startswith("exit:"):
        return "exit status " + status.split(":")[1]
    return status


def failure_word(status):
    if status.startswith("signal"):
        return "crash"
    if status == "timeout":
        return "timeout"
    if status == "wrong":
        return "wrong"
    return "fail"


class Cell:
    """The runs of one workload under one allocator."""

    def __init__(self):
        self.runs = []  # dicts with status (ok|wrong|signal:N|exit:N|timeout|error), wall, rss_kb

    @property
    def good(self):
        return [r for r in self.runs if r["status"] == "ok"]

    @property
    def failed(self):
        return [r for r in self.runs if r["status"] != "ok"]

    def usable(self):
        return bool(self.runs) and not self.failed

    def time(self):
        return statistics.median(r["wall"] for r in self.good)

    def rss_mib(self):
        return statistics.median(r["rss_kb"] for r in self.good) / 1024.0

    def failure(self):
        order = ["crash", "timeout", "wrong", "fail"]
        words = [failure_word(r["status"]) for r in self.failed]
        word = min(words, key=order.index)
        if len(self.failed) < len(self.runs):
            word += f" {len(self.failed)}/{len(self.runs)}"
        return word


def fmt_time(seconds):
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.2f} s"


def fmt_rss(mib):
    return f"{mib:.1f} MiB" if mib < 1000 else f"{mib / 1024:.2f} GiB"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main():
    parser = argparse.ArgumentParser(description="Tables from bench/run.sh raw results.")
    parser.add_argument("raw_dir")
    parser.add_argument("--out", help="markdown file to write (stdout always gets it too)")
    parser.add_argument("--base", default="obmem", help="allocator the ratios are about")
    args = parser.parse_args()

    meta = {row[0]: row[1] if len(row) > 1 else "" for row in read_tsv(os.path.join(args.raw_dir, "meta.tsv"))}
    allocators = meta.get("allocators", "").split()
    workloads = meta.get("workloads", "").split()
    notes = []
    notes_path = os.path.join(args.raw_dir, "notes.txt")
    if os.path.exists(notes_path):
        with open(notes_path, encoding="utf-8") as f:
            notes = [line.strip() for line in f if line.strip()]

    cells = collections.defaultdict(Cell)
    checksums = collections.defaultdict(list)  # workload -> [(alloc, checksum)] of status-ok runs
    for row in read_tsv(os.path.join(args.raw_dir, "runs.tsv")):
        if row[0] == "workload" or len(row) < 9:
            continue
        w, a, rep, status, wall, _user, _sys, rss, checksum = row[:9]
        run = {"status": status, "wall": float(wall or 0), "rss_kb": float(rss or 0),
               "checksum": checksum, "rep": rep, "message": row[9] if len(row) > 9 else ""}
        cells[(w, a)].runs.append(run)
        if status == "ok":
            checksums[w].append((a, checksum))
        if a not in allocators:
            allocators.append(a)
        if w not in workloads:
            workloads.append(w)

    # A checksum that differs from the reference turns an "ok" run into a "wrong" one.
    for w, seen in checksums.items():
        glibc = [c for a, c in seen if a == "glibc"]
        reference = collections.Counter(glibc or [c for _, c in seen]).most_common(1)[0][0]
        for a in allocators:
            for run in cells[(w, a)].runs if (w, a) in cells else []:
                if run["status"] == "ok" and run["checksum"] != reference:
                    run["status"] = "wrong"
                    if not run["message"]:
                        run["message"] = f"checksum {run['checksum']}, expected {reference}"

    base = args.base
    ran = [a for a in allocators if any(cells[(w, a)].runs for w in workloads if (w, a) in cells)]
    if base not in ran:
        fallback = ran[-1] if ran else None
        if fallback:
            notes.append(f"{base} has no results: ratios below are {fallback}/other instead.")
        base = fallback
    others = [a for a in ran if a != base]
    main_workloads = [w for w in workloads if w != MICRO]

    out = []
    out.append("# obmem allocator benchmarks")
    out.append("")
    info = []
    for key, label in [("date", "date"), ("machine", "machine"), ("reps", "runs per cell"),
                       ("scale", "scale"), ("obmem", "obmem"), ("versions", "allocators")]:
        if meta.get(key):
            info.append(f"- {label}: {meta[key]}")
    out += info
    out.append("")
    out.append(f"Median wall time and median peak RSS of {meta.get('reps', '?')} runs per cell, runs "
               "interleaved across allocators.  Ratio columns: "
               f"{base}/other, time and RSS (below 1: {base} is faster / smaller); last row: their "
               "geometric mean over the workloads where both succeeded.")
    out.append("")

    header = ["workload"] + ran + [f"{base}/{a} time, RSS" for a in others]
    rows = []
    ratios = {a: ([], []) for a in others}
    for w in main_workloads:
        row = [w]
        for a in ran:
            cell = cells.get((w, a))
            if cell is None or not cell.runs:
                row.append("–")
            elif cell.usable():
                row.append(f"{fmt_time(cell.time())}, {fmt_rss(cell.rss_mib())}")
            else:
                row.append(cell.failure())
        bcell = cells.get((w, base))
        for a in others:
            ocell = cells.get((w, a))
            if bcell and ocell and bcell.usable() and ocell.usable():
                rt, rr = bcell.time() / ocell.time(), bcell.rss_mib() / ocell.rss_mib()
                ratios[a][0].append(rt)
                ratios[a][1].append(rr)
                row.append(f"{rt:.2f}, {rr:.2f}")
            else:
                row.append("–")
        rows.append(row)
    geo = ["**geomean**"] + [""] * len(ran)
    for a in others:
        gt, gr = geomean(ratios[a][0]), geomean(ratios[a][1])
        if gt is None:
            geo.append("–")
        else:
            n = len(ratios[a][0])
            suffix = f" ({n}/{len(main_workloads)})" if n < len(main_workloads) else ""
            geo.append(f"**{gt:.2f}, {gr:.2f}**{suffix}")
    rows.append(geo)
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

    detail_rows = []
    for w in workloads:
        row = [w]
        for a in ran:
            cell = cells.get((w, a))
            if cell is None or not cell.good:
                row.append("–")
            else:
                t = sorted(r["wall"] for r in cell.good)
                row.append(f"{t[0]:.3f} / {statistics.median(t):.3f} / {t[-1]:.3f}")
        detail_rows.append(row)
    out.append("<details><summary>Details: min / median / max wall seconds of the successful runs</summary>")
    out.append("")
    out += table(["workload"] + ran, detail_rows)
    out.append("")
    out.append("</details>")
    out.append("")

    problems = []
    for w in workloads:
        for a in ran:
            cell = cells.get((w, a))
            if cell is None or not cell.failed:
                continue
            statuses = collections.Counter(describe(r["status"]) for r in cell.failed)
            what = ", ".join(f"{st} in {k}/{len(cell.runs)} runs" for st, k in statuses.items())
            messages = [r["message"] for r in cell.failed if r["message"]]
            problems.append(f"{w} under {a}: {what}" + (f" — {messages[0]}" if messages else ""))
    if notes or problems:
        out.append("Notes:")
        out.append("")
        out += [f"- {n}" for n in notes + problems]
        out.append("")

    text = "\n".join(out)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
