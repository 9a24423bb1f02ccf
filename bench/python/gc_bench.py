"""gc_bench.py — CPython's cycle collector on the heap shapes of bench/gc.c (obmem's side).

The shape: N tracked objects in units of three, each unit a small list L = [a, b] and a
mutually referencing pair a.other = b, a.holder = L, b.other = a (instances of a class with
__slots__, which CPython tracks), all held by one root list.  Every unit is a cycle, so once
the root goes all of it is cyclic garbage.

  gc_bench.py shapes N REPS       like bench_gc shapes: prints "live N ns", "garbage N ns"
                                  (per tracked object, medians over REPS) and "young N
                                  us_median us_max" (the generation 0 collections while
                                  200 x 700 / 3 units come and go on top of the live heap)
  gc_bench.py incremental N       like bench_gc incremental N 0 (CPython has no incremental
                                  mode before 3.13): prints "incremental N 0 total_gc_ms
                                  max_pause_us peak_rss_mib max_pause_cpu_us"

Timing: gc.callbacks' start/stop around each collection (perf_counter_ns), so only the
collector is timed; the incremental run's pause is the collectors' time within one
operation, as in bench/gc.c.
"""
import gc
import resource
import statistics
import sys
import time


class Pair:
    __slots__ = ("other", "holder")

    def __init__(self):
        self.other = None
        self.holder = None


def make_unit():
    a = Pair()
    b = Pair()
    unit = [a, b]
    a.other = b
    a.holder = unit
    b.other = a
    return unit


class Timer:
    """Durations of collections, from gc.callbacks."""

    def __init__(self):
        self.start = 0
        self.last = 0
        self.total = 0
        self.count = 0
        self.op = 0  # collector time within the current operation: wall
        self.op_cpu = 0  # and this thread's CPU time
        self.cpu_start = 0
        self.young = None  # a list while recording generation 0 pauses

    def __call__(self, phase, info):
        if phase == "start":
            self.start = time.perf_counter_ns()
            self.cpu_start = time.thread_time_ns()
            return
        self.last = time.perf_counter_ns() - self.start
        self.total += self.last
        self.op += self.last
        self.op_cpu += time.thread_time_ns() - self.cpu_start
        self.count += 1
        if self.young is not None and info["generation"] == 0:
            self.young.append(self.last)


def shapes(n, reps):
    nunits = n // 3
    timer = Timer()
    gc.callbacks.append(timer)
    live, garbage, young = [], [], []
    for _ in range(reps):
        gc.disable()
        root = [make_unit() for _ in range(nunits)]
        gc.collect()  # everything to the oldest generation
        tracked = len(gc.get_objects())
        gc.collect()
        live.append(timer.last / tracked)
        gc.enable()
        timer.young = young
        for _ in range(200 * 700 // 3):
            make_unit()
        timer.young = None
        gc.disable()
        gc.collect()
        del root
        found = gc.collect()
        if found < 3 * nunits:
            sys.exit("gc_bench: the garbage was not all found")
        garbage.append(timer.last / (3 * nunits))
    gc.enable()
    young.sort()
    print(f"live {n} {statistics.median(live):.2f}")
    print(f"garbage {n} {statistics.median(garbage):.2f}")
    print(f"young {n} {statistics.median(young) / 1e3:.2f} {young[-1] / 1e3:.2f}")


def incremental(n):
    chunk = 1000
    nunits = n // 3
    timer = Timer()
    gc.callbacks.append(timer)
    root, chunks = [], []
    x = 88172645463325252
    mask = (1 << 64) - 1
    made = placed = 0
    max_pause = max_pause_cpu = 0
    while placed < nunits:
        timer.op = timer.op_cpu = 0
        unit = make_unit()
        if made % 4 == 3 and placed > 0:  # replace a random earlier unit
            x ^= (x << 13) & mask
            x ^= x >> 7
            x ^= (x << 17) & mask
            i = x % placed
            chunks[i // chunk][i % chunk] = unit
        else:
            if placed % chunk == 0:
                chunks.append([])
                root.append(chunks[-1])
            chunks[placed // chunk].append(unit)
            placed += 1
        made += 1
        max_pause = max(max_pause, timer.op)
        max_pause_cpu = max(max_pause_cpu, timer.op_cpu)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"incremental {n} 0 {timer.total / 1e6:.1f} {max_pause / 1e3:.1f} {rss:.1f} "
          f"{max_pause_cpu / 1e3:.1f}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "shapes":
        shapes(int(float(sys.argv[2])), int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    elif len(sys.argv) >= 3 and sys.argv[1] == "incremental":
        incremental(int(float(sys.argv[2])))
    else:
        sys.exit("usage: gc_bench.py shapes N [REPS] | gc_bench.py incremental N")


if __name__ == "__main__":
    main()
