"""peak.py — the peak memory of one pipeline written with lists and with generators, from
obmem's own statistics (no tracer, no tracemalloc).

The pipeline: make N log lines, parse each into a record, keep the errors, and sum their
durations per service.  Written with lists every stage is materialized before the next
starts; written with generators one line at a time flows through.  Each version runs in a
fresh interpreter with OBMEM_PYTHON=1 (obmem installed at import, so the peak counts the
pipeline's objects and nothing from an earlier run), and reports obmem's high-water mark of
mapped memory (stats()['bytes_mapped_peak']) above what was mapped when the pipeline started.

    PYTHONPATH=build/python python3 examples/python/peak.py [N]
"""
import os
import subprocess
import sys

SERVICES = ["auth", "billing", "search", "mail", "storage"]


def lines(n):
    for i in range(n):
        level = "ERROR" if i % 7 == 0 else "INFO"
        yield "2026-11-27T10:%02d:%02d %s %s took=%dms" % (
            i // 60 % 60, i % 60, level, SERVICES[i % len(SERVICES)], i % 1000)


def parse(line):
    stamp, level, service, took = line.split(" ")
    return {"time": stamp, "level": level, "service": service, "ms": int(took[5:-2])}


def with_lists(n):
    all_lines = list(lines(n))
    records = [parse(line) for line in all_lines]
    errors = [r for r in records if r["level"] == "ERROR"]
    totals = {}
    for r in errors:
        totals[r["service"]] = totals.get(r["service"], 0) + r["ms"]
    return totals


def with_generators(n):
    records = (parse(line) for line in lines(n))
    errors = (r for r in records if r["level"] == "ERROR")
    totals = {}
    for r in errors:
        totals[r["service"]] = totals.get(r["service"], 0) + r["ms"]
    return totals


def child(variant, n):
    import obmem

    assert obmem.is_installed(), "run with OBMEM_PYTHON=1"
    base = obmem.stats()["bytes_mapped"]
    totals = (with_lists if variant == "lists" else with_generators)(n)
    s = obmem.stats()
    print(s["bytes_mapped_peak"] - base, sum(totals.values()), s["bytes_mapped_peak"])


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], int(sys.argv[3]))
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    env = dict(os.environ, OBMEM_PYTHON="1")
    peaks = {}
    for variant in ("lists", "generators"):
        out = subprocess.run([sys.executable, __file__, "--child", variant, str(n)], env=env,
                             check=True, capture_output=True, text=True).stdout.split()
        peaks[variant] = (int(out[0]), int(out[1]), int(out[2]))
    if peaks["lists"][1] != peaks["generators"][1]:
        raise SystemExit("peak.py: the two pipelines disagree: %r" % peaks)
    print("pipeline over %d log lines (same result: %d ms of errors)" % (n, peaks["lists"][1]))
    print()
    print("| version | obmem's peak mapped, above the start | in all (the interpreter's own too) |")
    print("|---|---:|---:|")
    for variant, (peak, _, whole) in peaks.items():
        print("| %s | %.1f KiB | %.1f MiB |" % (variant, peak / 1024, whole / 2**20))
    print()
    print("generators / lists: %.3f" % (peaks["generators"][0] / max(1, peaks["lists"][0])))


if __name__ == "__main__":
    main()
