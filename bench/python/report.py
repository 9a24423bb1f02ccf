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
import argparse
import collections
import math
import os
import signal
import statistics
import sys

TARGET_TIME, TARGET_RSS = 0.95, 1.00  # issue 3: obmem against pymalloc


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def describe(status):
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
    if status in ("timeout", "wrong"):
        return status
    return "fail"


class Cell:
    """The runs of one workload under one allocator."""

    def __init__(self):
        self.runs = []

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

    def cpu(self):
        return statistics.median(r["cpu"] for r in self.good)

    def rss_mib(self):
        return statistics.median(r["rss_kb"] for r in self.good) / 1024.0

    def failure(self):
        order = ["crash", "timeout", "wrong", "fail"]
        word = min((failure_word(r["status"]) for r in self.failed), key=order.index)
        if len(self.failed) < len(self.runs):
            word += f" {len(self.failed)}/{len(self.runs)}"
        return word


def fmt_time(seconds):
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.2f} s"


def fmt_rss(mib):
    return f"{mib:.1f} MiB" if mib < 1000 else f"{mib / 1024:.2f} GiB"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main():
    parser = argparse.ArgumentParser(description="Tables from bench/run_python.sh raw results.")
    parser.add_argument("raw_dir")
    parser.add_argument("--out", help="markdown file to write (stdout always gets it too)")
    parser.add_argument("--base", default="pymalloc", help="allocator the ratios are relative to")
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
    checksums = collections.defaultdict(list)  # workload -> [(alloc, checksum)] of ok runs
    for row in read_tsv(os.path.join(args.raw_dir, "runs.tsv")):
        if row[0] == "workload" or len(row) < 9:
            continue
        w, a, rep, status, wall, _user, _sys, rss, checksum = row[:9]
        run = {"status": status, "wall": float(wall or 0), "rss_kb": float(rss or 0),
               "cpu": float(_user or 0) + float(_sys or 0),
               "checksum": checksum, "rep": rep, "message": row[9] if len(row) > 9 else ""}
        cells[(w, a)].runs.append(run)
        if status == "ok":
            checksums[w].append((a, checksum))
        if a not in allocators:
            allocators.append(a)
        if w not in workloads:
            workloads.append(w)

    base = args.base
    for w, seen in checksums.items():
        from_base = [c for a, c in seen if a == base]
        reference = collections.Counter(from_base or [c for _, c in seen]).most_common(1)[0][0]
        for a in allocators:
            for run in cells[(w, a)].runs if (w, a) in cells else []:
                if run["status"] == "ok" and run["checksum"] != reference:
                    run["status"] = "wrong"
                    if not run["message"]:
                        run["message"] = f"checksum {run['checksum']}, expected {reference}"

    ran = [a for a in allocators if any((w, a) in cells and cells[(w, a)].runs for w in workloads)]
    if base not in ran:
        notes.append(f"{base} has no results: no ratios.")
    others = [a for a in ran if a != base]

    out = ["# CPython on each allocator", ""]
    for key, label in [("date", "date"), ("machine", "machine"), ("python", "python"),
                       ("reps", "runs per cell"), ("scale", "scale"), ("obmem", "obmem"),
                       ("versions", "allocators")]:
        if meta.get(key):
            out.append(f"- {label}: {meta[key]}")
    out.append("")
    out.append(f"`{base}`: CPython's own allocator (the default); every other column runs with "
               "`PYTHONMALLOC=malloc`, so that every object comes from malloc, and that malloc "
               "preloaded (glibc: none).  Median wall time and median peak RSS of "
               f"{meta.get('reps', '?')} interleaved runs per cell.")
    out.append("")

    rows = []
    for w in workloads:
        row = [w]
        for a in ran:
            cell = cells.get((w, a))
            if cell is None or not cell.runs:
                row.append("–")
            elif cell.usable():
                row.append(f"{fmt_time(cell.time())}, {fmt_rss(cell.rss_mib())}")
            else:
                row.append(cell.failure())
        rows.append(row)
    out += table(["workload"] + ran, rows)
    out.append("")

    geo = {}
    if base in ran and others:
        out.append(f"Ratios other/{base}, time and peak RSS (below 1: faster / smaller than "
                   f"{base}); last row: geometric means over the workloads where both succeeded.")
        out.append("")
        ratios = {a: ([], []) for a in others}
        rows = []
        for w in workloads:
            row = [w]
            bcell = cells.get((w, base))
            for a in others:
                ocell = cells.get((w, a))
                if bcell and ocell and bcell.usable() and ocell.usable():
                    rt, rr = ocell.time() / bcell.time(), ocell.rss_mib() / bcell.rss_mib()
                    ratios[a][0].append(rt)
                    ratios[a][1].append(rr)
                    row.append(f"{rt:.2f}, {rr:.2f}")
                else:
                    row.append("–")
            rows.append(row)
        last = ["**geomean**"]
        for a in others:
            gt, gr = geomean(ratios[a][0]), geomean(ratios[a][1])
            if gt is None:
                last.append("–")
                continue
            geo[a] = (gt, gr)
            n = len(ratios[a][0])
            suffix = f" ({n}/{len(workloads)})" if n < len(workloads) else ""
            last.append(f"**{gt:.2f}, {gr:.2f}**{suffix}")
        rows.append(last)
        out += table(["workload"] + [f"{a}/{base} time, RSS" for a in others], rows)
        out.append("")

    if "obmem" in geo and base == "pymalloc":
        gt, gr = geo["obmem"]
        verdict = lambda ok: "met" if ok else "not met"
        out.append(f"Target (issue 3): obmem ≤ {TARGET_TIME:.2f}× pymalloc's time — "
                   f"{gt:.2f}×, {verdict(gt <= TARGET_TIME)}; ≤ {TARGET_RSS:.2f}× its peak RSS — "
                   f"{gr:.2f}×, {verdict(gr <= TARGET_RSS)}.")
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

    if base in ran and others:
        cpu_rows = []
        cpu_ratios = {a: [] for a in others}
        for w in workloads:
            row = [w]
            bcell = cells.get((w, base))
            for a in ran:
                cell = cells.get((w, a))
                if cell is None or not cell.usable():
                    row.append("–")
                elif a == base or not (bcell and bcell.usable()):
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
        out.append("<details><summary>Details: median CPU seconds (user + sys) and, in brackets, "
                   f"the ratio to {base} — less disturbed than wall time by other load on the "
                   "machine</summary>")
        out.append("")
        out += table(["workload"] + ran, cpu_rows)
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
