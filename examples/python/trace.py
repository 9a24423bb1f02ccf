"""trace.py — which lines hold memory, which made the peak, and what the collector did.

obmem.start() as tracemalloc.start() (the same calls: `import obmem as tracemalloc` works for
the tracemalloc part), then what tracemalloc lacks: the stacks live at the peak and the
timeline with GC pauses.

Usage: PYTHONPATH=build/python python3 examples/python/trace.py
"""
import gc

import obmem


class Record:
    def __init__(self, i):
        self.key = "k%06d" % i
        self.values = [i, i * 2, i * 3]


def load(n):
    return [Record(i) for i in range(n)]


def index(records):
    return {r.key: r for r in records}


def report(rows):
    text = [("%s=%r" % (r.key, r.values)) for r in rows]  # a temporary: the peak
    return sum(len(t) for t in text)


def main():
    obmem.start(10)
    records = load(100_000)
    by_key = index(records)
    before = obmem.take_snapshot()
    report(records)
    gc.collect()
    after = obmem.take_snapshot()
    current, peak = obmem.get_traced_memory()
    print("traced now %.1f MiB, peak %.1f MiB" % (current / 2**20, peak / 2**20))
    print("\nTop lines now:")
    for stat in after.statistics("lineno")[:4]:
        print("  %s  in %s()" % (stat, after.function_name(stat.traceback[0])))
    print("\nTop lines at the peak (what tracemalloc cannot tell):")
    at_peak = obmem.get_peak_snapshot()
    for stat in at_peak.statistics("lineno")[:4]:
        print("  %s  in %s()" % (stat, at_peak.function_name(stat.traceback[0])))
    print("\nGrowth since the index was built:")
    for diff in after.compare_to(before, "lineno")[:3]:
        print("  %s" % diff)
    timeline = obmem.get_timeline()
    print("\nTimeline: %d samples; %d collections, %.2f ms in GC, longest pause %.2f ms"
          % (len(timeline.samples), len(timeline.gc_events), timeline.gc_time * 1e3,
             timeline.longest_gc_pause * 1e3))
    top = max(timeline.samples, key=lambda s: s.traced_bytes)
    print("largest sample: %.3f s, traced %.1f MiB, obmem in use %.1f MiB, RSS %.1f MiB"
          % (top.time, top.traced_bytes / 2**20, top.obmem_bytes / 2**20, top.rss_bytes / 2**20))
    obmem.stop()
    del by_key


main()
