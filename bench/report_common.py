"""report_common.py — what bench/report.py and bench/python/report.py share (stdlib only).

Both read the raw directory their run script filled (bench/run_common.sh writes the same files
for both):
  meta.tsv   key<TAB>value: allocators and workloads (in order), reps, scale, machine, versions
  runs.tsv   workload alloc rep status wall user sys maxrss_kb checksum message  (one per run;
             message: a line the run wrote to stderr, if any)
  notes.txt  free-text notes (skipped allocators, build problems), one per line
and both print medians per cell, ratio columns with a geometric-mean row, a details table of
min / median / max wall time, and the notes with what went wrong where.  A run counts as correct
when its status is "ok" and its checksum equals the workload's reference checksum (the
reference allocator's when it ran, else the one most runs printed).  A cell with any failed run
shows why instead of numbers: crash (killed by a signal), timeout, fail (non-zero exit) or wrong
(bad checksum), with "k/n" when only k of the n runs failed.
"""
import argparse
import collections
import math
import os
import signal
import statistics
import sys


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
    if status in ("timeout", "wrong"):
        return status
    return "fail"


class Cell:
    """The runs of one workload under one allocator."""

    def __init__(self):
        self.runs = []  # dicts with status (ok|wrong|signal:N|exit:N|timeout|error), wall, cpu, rss_kb

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

    def summary(self):
        """The main tables' text: median time and peak RSS, or what went wrong."""
        if not self.runs:
            return "–"
        if self.usable():
            return f"{fmt_time(self.time())}, {fmt_rss(self.rss_mib())}"
        return self.failure()


class Results:
    """A raw directory, read: meta, notes, and cells[(workload, allocator)]; allocators and
    workloads in meta.tsv's order, then those that only runs.tsv names."""

    def __init__(self, raw_dir):
        self.meta = {row[0]: row[1] if len(row) > 1 else "" for row in read_tsv(os.path.join(raw_dir, "meta.tsv"))}
        self.allocators = self.meta.get("allocators", "").split()
        self.workloads = self.meta.get("workloads", "").split()
        self.notes = []
        notes_path = os.path.join(raw_dir, "notes.txt")
        if os.path.exists(notes_path):
            with open(notes_path, encoding="utf-8") as f:
                self.notes = [line.strip() for line in f if line.strip()]

        self.cells = collections.defaultdict(Cell)
        self.checksums = collections.defaultdict(list)  # workload -> [(alloc, checksum)] of status-ok runs
        for row in read_tsv(os.path.join(raw_dir, "runs.tsv")):
            if row[0] == "workload" or len(row) < 9:
                continue
            w, a, rep, status, wall, user, sys_, rss, checksum = row[:9]
            run = {"status": status, "wall": float(wall or 0), "rss_kb": float(rss or 0),
                   "cpu": float(user or 0) + float(sys_ or 0),
                   "checksum": checksum, "rep": rep, "message": row[9] if len(row) > 9 else ""}
            self.cells[(w, a)].runs.append(run)
            if status == "ok":
                self.checksums[w].append((a, checksum))
            if a not in self.allocators:
                self.allocators.append(a)
            if w not in self.workloads:
                self.workloads.append(w)

    def check(self, reference):
        """A checksum that differs from the reference turns an "ok" run into a "wrong" one: the
        reference is the checksum of the allocator `reference` (the run script's, whose runs
        the others must match), else the most common one."""
        for w, seen in self.checksums.items():
            own = [c for a, c in seen if a == reference]
            expected = collections.Counter(own or [c for _, c in seen]).most_common(1)[0][0]
            for a in self.allocators:
                for run in self.cells[(w, a)].runs if (w, a) in self.cells else []:
                    if run["status"] == "ok" and run["checksum"] != expected:
                        run["status"] = "wrong"
                        if not run["message"]:
                            run["message"] = f"checksum {run['checksum']}, expected {expected}"

    def ran(self):
        """The allocators with at least one run, in order."""
        return [a for a in self.allocators
                if any((w, a) in self.cells and self.cells[(w, a)].runs for w in self.workloads)]

    def cell(self, w, a):
        """The cell, or an empty one (without adding it to cells)."""
        return self.cells.get((w, a)) or Cell()


def arguments(script, base, base_help):
    parser = argparse.ArgumentParser(description=f"Tables from {script} raw results.")
    parser.add_argument("raw_dir")
    parser.add_argument("--out", help="markdown file to write (stdout always gets it too)")
    parser.add_argument("--base", default=base, help=base_help)
    return parser.parse_args()


def fmt_time(seconds):
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.2f} s"


def fmt_rss(mib):
    return f"{mib:.1f} MiB" if mib < 1000 else f"{mib / 1024:.2f} GiB"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def details(summary, header, rows):
    """A table folded away under a <details> line: the numbers behind the main ones."""
    return [f"<details><summary>{summary}</summary>", ""] + table(header, rows) + ["", "</details>", ""]


def info(meta, keys):
    """The header's list: '- label: value' for each (key, label) that meta.tsv has."""
    return [f"- {label}: {meta[key]}" for key, label in keys if meta.get(key)]


def ratios(results, workloads, columns):
    """Ratio columns: for each (numerator, denominator) pair of allocators, the ratios of time
    and of peak RSS per workload ("–" unless both cells are usable), and a last row with their
    geometric means over the workloads where both succeeded ("(n/N)" when not all did).
    Returns the rows (without the workload column), that row, and {pair: (time, RSS) means}."""
    pairs = {column: [] for column in columns}
    rows = []
    for w in workloads:
        row = []
        for column in columns:
            num, den = results.cells.get((w, column[0])), results.cells.get((w, column[1]))
            if num and den and num.usable() and den.usable():
                rt, rr = num.time() / den.time(), num.rss_mib() / den.rss_mib()
                pairs[column].append((rt, rr))
                row.append(f"{rt:.2f}, {rr:.2f}")
            else:
                row.append("–")
        rows.append(row)
    last, means = [], {}
    for column in columns:
        if not pairs[column]:
            last.append("–")
            continue
        gt, gr = geomean([t for t, _ in pairs[column]]), geomean([r for _, r in pairs[column]])
        means[column] = (gt, gr)
        n = len(pairs[column])
        suffix = f" ({n}/{len(workloads)})" if n < len(workloads) else ""
        last.append(f"**{gt:.2f}, {gr:.2f}**{suffix}")
    return rows, last, means


def wall_details(results, ran):
    """The details table of min / median / max wall seconds of the successful runs."""
    rows = []
    for w in results.workloads:
        row = [w]
        for a in ran:
            good = results.cell(w, a).good
            if not good:
                row.append("–")
            else:
                t = sorted(r["wall"] for r in good)
                row.append(f"{t[0]:.3f} / {statistics.median(t):.3f} / {t[-1]:.3f}")
        rows.append(row)
    return details("Details: min / median / max wall seconds of the successful runs", ["workload"] + ran, rows)


def notes(results, ran, extra=()):
    """The notes of the run script and `extra`, then what went wrong in each cell."""
    problems = []
    for w in results.workloads:
        for a in ran:
            cell = results.cell(w, a)
            if not cell.failed:
                continue
            statuses = collections.Counter(describe(r["status"]) for r in cell.failed)
            what = ", ".join(f"{st} in {k}/{len(cell.runs)} runs" for st, k in statuses.items())
            messages = [r["message"] for r in cell.failed if r["message"]]
            problems.append(f"{w} under {a}: {what}" + (f" — {messages[0]}" if messages else ""))
    lines = results.notes + list(extra) + problems
    if not lines:
        return []
    return ["Notes:", ""] + [f"- {n}" for n in lines] + [""]


def write(out, path):
    """The document to `path` (if any) and to stdout."""
    text = "\n".join(out)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
