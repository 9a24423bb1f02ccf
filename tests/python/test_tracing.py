"""test_tracing.py — obmem's Python-level tracing (python/trace.c, python/_obmem_tracing.py).

Run by ctest (tests/python/CMakeLists.txt) with PYTHONPATH at the built module.  Deterministic:
fixed sizes and counts, no timing thresholds; the thread test's shuffle uses OBMEM_TEST_SEED
(printed on failure).  The lines allocations are attributed to are found by the markers
"# line: NAME" in this file, so editing the file does not break the expectations.

What is checked:
  - exact attribution: 1000 blocks of a known size at a known line are the top 'lineno'
    statistic, with their bytes and count; several frames with nframe > 1; function names;
  - the same top lines, in the same order, as tracemalloc on the same code, run one after the
    other in this process;
  - snapshots: compare_to, filter_traces with Filter and DomainFilter, traceback statistics,
    cumulative, dump and load;
  - get_object_traceback for a GC instance (pre-headers) and a plain object;
  - start/stop/clear_traces with objects alive from before: their frees are ignored;
  - threads: each thread's allocations at its own line;
  - the RAW domain (PyMem_RawMalloc through ctypes): with the GIL (ctypes.pythonapi) and
    without it (a ctypes.CDLL function releases it), attributed to the calling line, also
    after a sub-interpreter was made (PyGILState_Check then answers 1 on every thread); frees
    without the GIL taken out of the totals, exactly, and before the trace of a block that
    reuses the address; threads allocating without the GIL, their blocks at their line
    while live and gone once freed, in exact and sampled mode;
  - the peak snapshot: a temporary peak in a known function, gone at the end;
  - the timeline: samples and GC events (generation 2 of gc.collect());
  - the site cache: the same innermost line through other callers gets its own stacks, the
    limit lowered while tracing;
  - sampled mode (start(sample=BYTES), fixed seed): the top line and its estimated bytes
    within 15 % of the exact bytes, frees seen, modes not mixed;
  - the refusals: nframe out of range, snapshot while not tracing; uninstall stops tracing;
  - CPython's own test_tracemalloc cases that apply, with obmem's functions put in the
    tracemalloc module (the others read _tracemalloc's internals, count the whole stack's
    depth in total_nframe, or expect the traceback of an object taken from a free list to be
    its reuse's, which CPython reports to tracemalloc alone).
"""
import ctypes
import gc
import os
import random
import sys
import tempfile
import threading
import tracemalloc
import unittest

import obmem

try:
    from test import test_tracemalloc as cpython_tests
except ImportError:  # an interpreter without its test package
    cpython_tests = None

SEED = int(os.environ.get("OBMEM_TEST_SEED", "12345"))
THIS = os.path.abspath(__file__)
BLOB = 200  # bytes(BLOB) asks for sys.getsizeof(bytes(BLOB)) bytes


def line_of(name):
    """The line of this file marked "# line: name"."""
    with open(THIS, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if text.rstrip().endswith("# line: " + name):
                return number
    raise AssertionError("no line marked %r" % name)


def make_blobs(n):
    return [bytes(BLOB) for _ in range(n)]  # line: blobs


def make_small(n):
    return [bytes(40) for _ in range(n)]  # line: small


def make_medium(n):
    return [bytes(120) for _ in range(n)]  # line: medium


def nested_outer(n):
    return nested_inner(n)  # line: outer


def nested_inner(n):
    return [bytes(64) for _ in range(n)]  # line: inner


class Item:
    def __init__(self, i):
        self.i = i


def make_item():
    return Item(7)  # line: item


def temporary_peak():
    big = [bytes(1000) for _ in range(5000)]  # line: peak
    return len(big)


def leaf(n):
    return [bytes(48) for _ in range(n)]  # line: leaf


def via_a(n):
    return leaf(n)  # line: via_a


def via_b(n):
    return leaf(n)  # line: via_b


def twice():
    first = via_a(300)  # line: twice_a
    second = via_a(200)  # line: twice_b
    return first, second


def sampled_blobs(n):
    return [bytes(1000) for _ in range(n)]  # line: sampled


def raw_functions(api):
    """PyMem_RawMalloc and PyMem_RawFree through a ctypes library: ctypes.pythonapi calls
    them with the GIL held, a ctypes.CDLL releases it around each call."""
    malloc, free = api.PyMem_RawMalloc, api.PyMem_RawFree
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    return malloc, free


def raw_with_gil(malloc, n, size):
    return [malloc(size) for _ in range(n)]  # line: raw_gil


def raw_without_gil(malloc, n, size):
    return [malloc(size) for _ in range(n)]  # line: raw_nogil


def raw_reuse(malloc, size):
    return malloc(size)  # line: raw_reuse


def ours(stats, count=None):
    """The statistics of this file only, as (lineno, size, count)."""
    rows = [(s.traceback[0].lineno, s.size, s.count) for s in stats
            if s.traceback[0].filename == THIS]
    return rows if count is None else rows[:count]


class TracingTest(unittest.TestCase):
    def setUp(self):
        obmem.install()

    def tearDown(self):
        obmem.stop()
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        obmem.uninstall()

    def test_exact_attribution(self):
        obmem.start()
        self.assertTrue(obmem.is_tracing())
        self.assertEqual(obmem.get_traceback_limit(), 1)
        blobs = make_blobs(1000)
        snapshot = obmem.take_snapshot()
        top = snapshot.statistics("lineno")[0]
        self.assertEqual(top.traceback[0].filename, THIS)
        self.assertEqual(top.traceback[0].lineno, line_of("blobs"))
        self.assertGreaterEqual(top.count, 1000)
        self.assertGreaterEqual(top.size, 1000 * sys.getsizeof(blobs[0]))
        # the list and its growth, nothing else: at most one more block than the blobs
        self.assertLessEqual(top.count, 1001)
        self.assertEqual(snapshot.function_name(top.traceback[0]),
                         "<listcomp>" if sys.version_info < (3, 12) else "make_blobs")
        current, peak = obmem.get_traced_memory()
        self.assertGreaterEqual(current, top.size)
        self.assertGreaterEqual(peak, current)
        del blobs

    def test_frames(self):
        obmem.start(10)
        self.assertEqual(obmem.get_traceback_limit(), 10)
        kept = nested_outer(500)  # line: call
        stats = obmem.take_snapshot().statistics("traceback")
        lines = [f.lineno for f in stats[0].traceback if f.filename == THIS]  # oldest first
        wanted = [line_of("call"), line_of("outer"), line_of("inner")]
        if sys.version_info < (3, 12):  # the comprehension is a frame of its own
            wanted.append(line_of("inner"))
        self.assertEqual(lines[-len(wanted):], wanted)
        self.assertGreaterEqual(stats[0].count, 500)
        del kept

    def test_same_site_different_callers(self):
        # the site cache keys a stack by its innermost instruction: the same leaf line reached
        # through other callers (the same frame addresses and code, another caller's line
        # further out, as twice() makes) must still get each its own stack
        obmem.start(10)
        kept = [(via_a(3), via_b(2)) for _ in range(50)]  # line: loop
        kept.append(twice())  # line: call_twice
        obmem.start(2)  # a lower limit while tracing: shorter stacks from now on
        kept.append(via_b(100))  # line: short
        blob = sys.getsizeof(bytes(48))
        counts = {}
        for trace in obmem.take_snapshot().traces:
            if trace.size == blob:
                lines = tuple(f.lineno for f in trace.traceback if f.filename == THIS)
                counts[lines] = counts.get(lines, 0) + 1
        leaf_lines = (line_of("leaf"),) * (2 if sys.version_info < (3, 12) else 1)
        comprehension = (line_of("loop"),) if sys.version_info < (3, 12) else ()
        expected = {
            comprehension + (line_of("loop"), line_of("via_a")) + leaf_lines: 150,
            comprehension + (line_of("loop"), line_of("via_b")) + leaf_lines: 100,
            (line_of("call_twice"), line_of("twice_a"), line_of("via_a")) + leaf_lines: 300,
            (line_of("call_twice"), line_of("twice_b"), line_of("via_a")) + leaf_lines: 200,
        }
        short = leaf_lines if len(leaf_lines) == 2 else (line_of("via_b"),) + leaf_lines
        expected[short] = 100
        got = {lines: count for lines, count in counts.items() if lines in expected}
        self.assertEqual(got, expected, counts)
        del kept

    def test_sampled(self):
        obmem.start(5, sample=64 * 1024, seed=SEED)
        self.assertEqual(obmem.get_sampling(), 64 * 1024)
        blobs = sampled_blobs(40000)
        exact = 40000 * sys.getsizeof(blobs[0])
        top = obmem.take_snapshot().statistics("lineno")[0]
        self.assertEqual((top.traceback[0].filename, top.traceback[0].lineno),
                         (THIS, line_of("sampled")))
        # about exact / 64 KiB = 620 samples: the estimate within 15 % (3.7 sigma)
        self.assertLess(abs(top.size - exact), exact * 0.15, (top.size, exact))
        self.assertLess(top.count, 40000 // 20)  # sampled: a trace per about 64 blocks
        current, peak = obmem.get_traced_memory()
        self.assertGreaterEqual(current, top.size)
        del blobs
        current_after, _ = obmem.get_traced_memory()
        self.assertLess(current_after, current - top.size * 0.9)  # their frees were seen
        with self.assertRaises(ValueError):  # exact and sampled traces do not mix
            obmem.start(5)
        obmem.stop()
        self.assertEqual(obmem.get_sampling(), 0)
        with self.assertRaises(ValueError):
            obmem.start(1, sample=-1)
        obmem.start(1)
        self.assertEqual(obmem.get_sampling(), 0)

    def test_same_top_lines_as_tracemalloc(self):
        def workload():
            return make_blobs(3000), make_medium(2000), make_small(3000)

        tracemalloc.start()
        kept = workload()
        expected = ours(tracemalloc.take_snapshot().statistics("lineno"), 3)
        tracemalloc.stop()
        del kept
        obmem.start()
        kept = workload()
        got = ours(obmem.take_snapshot().statistics("lineno"), 3)
        del kept
        self.assertEqual([r[0] for r in got], [r[0] for r in expected])
        self.assertEqual([line_of("blobs"), line_of("medium"), line_of("small")],
                         [r[0] for r in got])
        for (line, size, count), (_, tm_size, tm_count) in zip(got, expected):
            self.assertEqual((size, count), (tm_size, tm_count), "line %d" % line)

    def test_compare_filter_dump(self):
        obmem.start()
        first = make_small(100)
        old = obmem.take_snapshot()
        second = make_medium(700)
        new = obmem.take_snapshot()
        diff = new.compare_to(old, "lineno")
        self.assertEqual(diff[0].traceback[0].lineno, line_of("medium"))
        self.assertGreaterEqual(diff[0].count_diff, 700)
        self.assertGreaterEqual(diff[0].size_diff, 700 * sys.getsizeof(second[0]))
        only_here = new.filter_traces([obmem.Filter(True, THIS)])
        self.assertTrue(all(t.traceback[0].filename == THIS for t in only_here.traces))
        self.assertEqual(only_here.function_names, new.function_names)
        not_here = new.filter_traces([obmem.Filter(False, THIS)])
        self.assertEqual(len(only_here.traces) + len(not_here.traces), len(new.traces))
        self.assertEqual(len(new.filter_traces([obmem.DomainFilter(False, 0)]).traces), 0)
        self.assertEqual(len(new.filter_traces([obmem.DomainFilter(True, 0)]).traces),
                         len(new.traces))
        by_file = {s.traceback[0].filename: s for s in new.statistics("filename")}
        self.assertGreaterEqual(by_file[THIS].count, 800)
        cumulative = new.statistics("lineno", cumulative=True)
        self.assertGreaterEqual(len(cumulative), 2)
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "snapshot.pickle")
            new.dump(path)
            loaded = obmem.Snapshot.load(path)
        self.assertIsInstance(loaded, obmem.Snapshot)
        self.assertEqual(loaded.statistics("lineno"), new.statistics("lineno"))
        self.assertEqual(loaded.function_names, new.function_names)
        del first, second

    def test_object_traceback(self):
        obmem.start()
        item = make_item()  # a GC instance: its block starts before the object
        blob = make_blobs(1)[0]  # not GC
        tb = obmem.get_object_traceback(item)
        self.assertIsNotNone(tb)
        self.assertEqual((tb[0].filename, tb[0].lineno), (THIS, line_of("item")))
        tb = obmem.get_object_traceback(blob)
        self.assertEqual(tb[0].lineno, line_of("blobs"))
        self.assertIsNone(obmem.get_object_traceback(None))  # static, never traced
        obmem.stop()
        self.assertIsNone(obmem.get_object_traceback(item))

    def test_live_objects_across_start_stop_clear(self):
        before = make_blobs(2000)
        obmem.start()
        after = make_medium(500)
        current, _ = obmem.get_traced_memory()
        del before  # allocated before start(): frees ignored
        gc.collect()
        now, _ = obmem.get_traced_memory()
        self.assertGreaterEqual(now, 500 * sys.getsizeof(after[0]))
        self.assertLess(abs(now - current), 64 * 1024)
        obmem.clear_traces()
        self.assertTrue(obmem.is_tracing())
        self.assertLess(obmem.get_traced_memory()[0], 64 * 1024)
        del after  # traced, then cleared: ignored too
        fresh = make_small(300)
        stats = ours(obmem.take_snapshot().statistics("lineno"))
        self.assertEqual(stats[0][0], line_of("small"))
        self.assertNotIn(line_of("medium"), [r[0] for r in stats])
        obmem.stop()
        self.assertFalse(obmem.is_tracing())
        self.assertEqual(obmem.get_traced_memory(), (0, 0))
        del fresh
        obmem.start(3)
        again = make_blobs(10)
        self.assertEqual(ours(obmem.take_snapshot().statistics("lineno"))[0][0], line_of("blobs"))
        del again

    def test_threads(self):
        rng = random.Random(SEED)
        makers = [make_blobs, make_medium, make_small, nested_inner]
        rng.shuffle(makers)
        obmem.start()
        results = {}
        barrier = threading.Barrier(len(makers))

        def run(maker):
            barrier.wait()
            results[maker] = [maker(50) for _ in range(20)]

        threads = [threading.Thread(target=run, args=(m,)) for m in makers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = {r[0]: r for r in ours(obmem.take_snapshot().statistics("lineno"))}
        for name in ("blobs", "medium", "small", "inner"):
            self.assertIn(line_of(name), stats, "seed %d" % SEED)
            self.assertGreaterEqual(stats[line_of(name)][2], 1000, "seed %d" % SEED)

    def test_raw_domain(self):
        with_gil = raw_functions(ctypes.pythonapi)
        without_gil = raw_functions(ctypes.CDLL(None))
        obmem.start()
        base = obmem.get_traced_memory()[0]
        held = raw_with_gil(with_gil[0], 100, 3000)
        free_run = raw_without_gil(without_gil[0], 100, 5000)
        stats = {r[0]: r for r in ours(obmem.take_snapshot().statistics("lineno"))}
        for name, size in (("raw_gil", 3000), ("raw_nogil", 5000)):
            self.assertIn(line_of(name), stats)
            _, total, count = stats[line_of(name)]
            self.assertGreaterEqual(count, 100)
            self.assertLessEqual(count, 210)  # and the addresses' ints, the list's growth
            self.assertGreaterEqual(total, 100 * size)
            self.assertLess(total, 100 * size + 8192)
        before = obmem.get_traced_memory()[0]
        for p in free_run:
            without_gil[1](p)  # frees without the GIL: queued, applied at the next record
        dropped = before - obmem.get_traced_memory()[0]
        self.assertGreater(dropped, 100 * 5000 - 4096)
        self.assertLess(dropped, 100 * 5000 + 4096)
        for p in held:
            with_gil[1](p)
        stats = {r[0]: r for r in ours(obmem.take_snapshot().statistics("lineno"))}
        self.assertLess(stats.get(line_of("raw_nogil"), (0, 0, 0))[1], 16384)
        self.assertLess(stats.get(line_of("raw_gil"), (0, 0, 0))[1], 16384)
        # a block freed without the GIL and handed out again at once (obmem's free list is
        # LIFO): its queued removal is applied before the new trace, not after it
        p = without_gil[0](7000)
        without_gil[1](p)
        q = raw_reuse(with_gil[0], 7000)
        stats = {r[0]: r for r in ours(obmem.take_snapshot().statistics("lineno"))}
        self.assertEqual(q, p)
        self.assertGreaterEqual(stats[line_of("raw_reuse")][1], 7000)
        with_gil[1](q)

    def test_raw_domain_after_subinterpreter(self):
        try:
            import _xxsubinterpreters as interpreters
        except ImportError:
            self.skipTest("no _xxsubinterpreters")
        interpreters.destroy(interpreters.create())
        malloc, free = raw_functions(ctypes.CDLL(None))
        obmem.start()
        blocks = raw_without_gil(malloc, 50, 6000)
        stats = {r[0]: r for r in ours(obmem.take_snapshot().statistics("lineno"))}
        self.assertIn(line_of("raw_nogil"), stats)
        self.assertGreaterEqual(stats[line_of("raw_nogil")][1], 50 * 6000)
        for p in blocks:
            free(p)

    def test_raw_domain_subinterpreter_from_another_thread(self):
        # 3.11 runs a sub-interpreter's code in its head thread state, made by the thread that
        # created it, whichever thread calls run_string: that thread holds the GIL all the
        # same (taking it again for a RAW allocation would hang)
        try:
            import _xxsubinterpreters  # noqa: F401
        except ImportError:
            self.skipTest("no _xxsubinterpreters")
        import subprocess

        code = ("import threading, obmem\n"
                "import _xxsubinterpreters as interpreters\n"
                "i = interpreters.create()\n"
                "obmem.start()\n"
                "t = threading.Thread(target=interpreters.run_string, args=(i, "
                "'import zlib; zlib.compress(bytes(200000), 6)'))\n"
                "t.start(); t.join()\n"
                "interpreters.destroy(i)\n"
                "print('ran ok')\n")
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(child.returncode, 0, child.stderr)
        self.assertIn("ran ok", child.stdout)

    def test_raw_domain_threads(self):
        malloc, free = raw_functions(ctypes.CDLL(None))
        rng = random.Random(SEED)
        sizes = [rng.randrange(1, 70000) for _ in range(64)]

        kept = {}

        def run(k):
            for i in range(500):  # allocate and free without the GIL, a few blocks live
                live = raw_without_gil(malloc, 4, sizes[(k + i) % len(sizes)])
                for p in live:
                    free(p)
            kept[k] = raw_without_gil(malloc, 20, 50000)  # left live

        def release(k):
            for p in kept[k]:
                free(p)

        for sample in (0, 4096):  # exact, then sampled
            message = "seed %d, sample %d" % (SEED, sample)
            obmem.start(sample=sample, seed=SEED)
            base = obmem.get_traced_memory()[0]
            for target in (run, release):
                threads = [threading.Thread(target=target, args=(k,)) for k in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                stats = {r[0]: r for r in ours(obmem.take_snapshot().statistics("lineno"))}
                live = stats.get(line_of("raw_nogil"), (0, 0, 0))[1]
                if target is run:  # 4 x 20 x 50000 bytes (an estimate when sampled)
                    self.assertGreater(live, 4 * 20 * 50000 * 0.8, message)
                    self.assertLess(live, 4 * 20 * 50000 * 1.2 + 65536, message)
                else:
                    self.assertLess(live, 65536, message)
                    self.assertLess(obmem.get_traced_memory()[0], base + 256 * 1024, message)
            obmem.stop()

    def test_peak_snapshot(self):
        obmem.start()
        kept = make_small(100)
        self.assertEqual(temporary_peak(), 5000)
        _, peak = obmem.get_traced_memory()
        at_peak = {r[0]: r for r in ours(obmem.get_peak_snapshot().statistics("lineno"))}
        self.assertIn(line_of("peak"), at_peak)
        # recorded when the peak had grown by 1 % or 64 KiB: within that step of the peak
        step = max(peak // 100, 64 * 1024)
        size = sys.getsizeof(bytes(1000))
        self.assertGreaterEqual(at_peak[line_of("peak")][1], 5000 * size - step)
        self.assertGreaterEqual(at_peak[line_of("peak")][2], 5000 - step // size - 1)
        total = sum(s.size for s in obmem.get_peak_snapshot().statistics("lineno"))
        self.assertLessEqual(total, peak)
        self.assertGreaterEqual(total, peak - step - 8 * 5000)
        at_end = {r[0] for r in ours(obmem.take_snapshot().statistics("lineno"))}
        self.assertNotIn(line_of("peak"), at_end)
        self.assertIn(line_of("small"), at_end)
        obmem.reset_peak()  # the peak set is now the live set
        at_reset = {r[0] for r in ours(obmem.get_peak_snapshot().statistics("lineno"))}
        self.assertNotIn(line_of("peak"), at_reset)
        del kept

    def test_timeline(self):
        obmem.start(timeline_interval_ms=0.001)
        kept = [make_small(1000) for _ in range(20)]
        gc.collect()
        timeline = obmem.get_timeline()
        self.assertGreaterEqual(len(timeline.samples), 2)
        times = [s.time for s in timeline.samples]
        self.assertEqual(times, sorted(times))
        self.assertGreater(max(s.traced_bytes for s in timeline.samples), 0)
        self.assertTrue(all(s.rss_bytes > 0 and s.obmem_bytes > 0 for s in timeline.samples[1:]))
        full = [e for e in timeline.gc_events if e.generation == 2]
        self.assertGreaterEqual(len(full), 1)
        self.assertGreaterEqual(full[-1].duration, 0)
        self.assertGreaterEqual(timeline.longest_gc_pause, full[-1].duration)
        self.assertGreaterEqual(timeline.gc_time, timeline.longest_gc_pause)
        obmem.stop()
        self.assertNotIn("_obmem_gc_callback", [getattr(c, "__name__", "") for c in gc.callbacks])
        del kept

    def test_refusals(self):
        for bad in (0, -1, 129):
            with self.assertRaises(ValueError):
                obmem.start(bad)
        with self.assertRaises(RuntimeError):
            obmem.take_snapshot()
        obmem.start()
        obmem.uninstall()  # stops tracing: the hooks go with it
        self.assertFalse(obmem.is_tracing())
        self.assertFalse(obmem.is_installed())
        obmem.start()  # installs again
        self.assertTrue(obmem.is_installed())


SUBSTITUTED = ("start", "stop", "is_tracing", "get_traceback_limit", "take_snapshot",
               "get_traced_memory", "reset_peak", "get_object_traceback", "clear_traces",
               "get_tracemalloc_memory")
CPYTHON_CASES = ("test_clear_traces", "test_fork", "test_get_object_traceback",
                 "test_get_traced_memory", "test_get_tracemalloc_memory", "test_is_tracing",
                 "test_no_incomplete_frames", "test_reset_peak", "test_snapshot_save_attr")


class CPythonTracemallocTest(unittest.TestCase):
    def test_cpython_cases(self):
        if cpython_tests is None:
            self.skipTest("no test.test_tracemalloc in this interpreter")
        saved = {name: getattr(tracemalloc, name) for name in SUBSTITUTED}
        obmem.install()
        try:
            for name in SUBSTITUTED:
                setattr(tracemalloc, name, getattr(obmem, name))
            suite = unittest.TestSuite(cpython_tests.TestTracemallocEnabled(name)
                                       for name in CPYTHON_CASES)
            result = unittest.TestResult()
            suite.run(result)
        finally:
            for name, value in saved.items():
                setattr(tracemalloc, name, value)
            obmem.stop()
            obmem.uninstall()
        problems = [(str(case), text) for case, text in result.failures + result.errors]
        self.assertEqual(problems, [])
        self.assertEqual(result.testsRun, len(CPYTHON_CASES))


if __name__ == "__main__":
    try:
        unittest.main()
    finally:
        print("OBMEM_TEST_SEED=%d" % SEED, file=sys.stderr)
