"""test_obmem.py — the CPython module obmem (python/), with the interpreter's unittest.

Run by ctest (tests/python/CMakeLists.txt) as `python3 -m unittest` with PYTHONPATH at the
built module.  Deterministic: fixed sizes and counts, a fixed seed (OBMEM_TEST_SEED, printed
on failure) for the thread test's shuffles, no timing thresholds.

What is checked:
  - install/uninstall with objects created before, during and after, freed and grown
    (realloc) across the switch in both directions, repeatedly;
  - threads allocating (with the GIL, and zlib without it: the RAW domain) while the main
    thread installs and uninstalls;
  - at exit (the atexit callback the first install registers, called here in child
    interpreters): new RAW blocks come from the previous allocator (libc's free takes them,
    as CPython's moments on its default allocator late in finalization need), obmem's are
    still freed, tracing starts and stops after it; traced RAW blocks freed by a callback
    that runs after it leave the totals; a call before any install holds for later installs;
    the module's first import in a sub-interpreter leaves the main interpreter's RAW on obmem;
  - stats(): 10 000 objects of a known size land in the class that serves their request;
  - sizeof() exact for known objects, against the class table (obmem's blocks) and against
    CPython's own accounting (sys.getsizeof = request + buffers' requests);
  - deep_sizeof() counts shared objects once, and does not enter types or modules.
"""
import array
import gc
import os
import random
import sys
import threading
import unittest
import zlib

import obmem

SEED = int(os.environ.get("OBMEM_TEST_SEED", "12345"))


def class_for(request):
    """(index, block_size) of the obmem class that serves a request of `request` bytes."""
    for c in obmem.stats()["classes"]:
        if c["block_size"] >= request:
            return c["index"], c["block_size"]
    raise AssertionError("no class for %d bytes" % request)


def fresh_str(text):
    """A new, uninterned str object equal to text (allocated now, not a cached constant)."""
    return "".join([text[:1], text[1:]])


class InstallTest(unittest.TestCase):
    def tearDown(self):
        obmem.uninstall()

    def test_state(self):
        obmem.install()
        self.assertTrue(obmem.is_installed())
        obmem.install()  # twice is once
        self.assertTrue(obmem.is_installed())
        obmem.uninstall()
        self.assertFalse(obmem.is_installed())
        obmem.uninstall()
        self.assertFalse(obmem.is_installed())

    def test_objects_across_the_switch(self):
        def make(tag):
            return [[tag, i, str(i) * 3, bytes(i % 700), {"k": i}] for i in range(3000)]

        before = make("before")  # the previous allocators' blocks
        obmem.install()
        installed = obmem.stats()["bytes_in_use"]
        during = make("during")  # obmem's blocks
        self.assertGreater(obmem.stats()["bytes_in_use"], installed + 100_000)
        for row in before:  # realloc and free of foreign blocks while installed
            row.extend(range(50))
            del row[1:3]
        del before[::2]
        obmem.uninstall()
        uninstalled = obmem.stats()["bytes_in_use"]
        after = make("after")  # the previous allocators again
        for row in during:  # realloc of obmem blocks after uninstall: they move out
            row.extend(range(50))
        self.assertEqual(sum(len(r) for r in during), 3000 * 55)
        del during  # obmem's blocks freed by obmem after uninstall
        gc.collect()
        self.assertLess(obmem.stats()["bytes_in_use"], uninstalled - 100_000)
        obmem.install()  # and back: the forwarding allocator gives way again
        again = make("again")
        del before, after, again
        obmem.uninstall()
        gc.collect()

    def test_size_zero_is_unique(self):
        obmem.install()
        # bytearray(0) keeps no buffer; a bytearray resized to 0 reallocs to size 0 blocks
        blobs = [bytearray(b"x") for _ in range(100)]
        for b in blobs:
            b.clear()
        arrays = [array.array("b") for _ in range(100)]
        self.assertEqual(sum(len(a) for a in arrays), 0)
        self.assertEqual(len({id(b) for b in blobs}), 100)

    def test_refuses_while_tracemalloc_traces(self):
        import tracemalloc

        tracemalloc.start()
        try:
            with self.assertRaises(RuntimeError):
                obmem.install()
        finally:
            tracemalloc.stop()
        self.assertFalse(obmem.is_installed())
        obmem.install()
        tracemalloc.start()  # tracemalloc over obmem is fine: it wraps obmem's functions
        data = [str(i) for i in range(1000)]
        self.assertGreater(tracemalloc.get_traced_memory()[0], 0)
        with self.assertRaises(RuntimeError):
            obmem.uninstall()
        tracemalloc.stop()
        del data


# Every child script starts so: PyMem_RawMalloc and PyMem_RawFree with the GIL, libc's free.
CHILD_PRELUDE = r"""
import ctypes
api = ctypes.pythonapi
api.PyMem_RawMalloc.restype, api.PyMem_RawMalloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
api.PyMem_RawFree.restype, api.PyMem_RawFree.argtypes = None, [ctypes.c_void_p]
libc_free = ctypes.CDLL(None).free
libc_free.restype, libc_free.argtypes = None, [ctypes.c_void_p]
"""

AT_EXIT_CHILD = r"""
import obmem
obmem.install()
before = [api.PyMem_RawMalloc(100) for _ in range(100)]  # obmem's
obmem._at_exit()  # what the atexit callback does
after = [api.PyMem_RawMalloc(100) for _ in range(100)]  # the previous allocator's (libc)
for p in after:
    libc_free(p)  # an obmem block here would abort the process
for p in before:
    api.PyMem_RawFree(p)  # obmem's, freed by obmem
assert obmem.is_installed()
obmem.start()
data = [str(i) for i in range(1000)]
assert obmem.get_traced_memory()[0] > 0
obmem.stop()
print("at-exit ok")
"""


# A callback registered before obmem's (so run after it) frees traced RAW blocks: their
# traces go; a block allocated there is the previous allocator's.
AT_EXIT_TRACED_CHILD = r"""
import atexit
blocks = []

def late():
    before = obmem.get_traced_memory()[0]
    for p in blocks:
        api.PyMem_RawFree(p)
    dropped = before - obmem.get_traced_memory()[0]
    assert 990000 < dropped < 1010000, dropped
    p = api.PyMem_RawMalloc(100)
    libc_free(p)  # the previous allocator's block
    print("late ok", flush=True)

atexit.register(late)
import obmem
obmem.start()
blocks = [api.PyMem_RawMalloc(10000) for _ in range(100)]
"""

# _at_exit before any install: a later install() or start() leaves RAW on the previous
# allocator.
AT_EXIT_FIRST_CHILD = r"""
import obmem
obmem._at_exit()
obmem.install()
obmem.start()
p = api.PyMem_RawMalloc(100)
libc_free(p)
obmem.stop()
print("first ok")
"""

# The module's first import in a sub-interpreter does not switch the main interpreter's RAW.
SUBINTERPRETER_IMPORT_CHILD = r"""
import _xxsubinterpreters as interpreters
i = interpreters.create()
try:
    interpreters.run_string(i, "import obmem")
except interpreters.RunFailedError as e:  # 3.12: a single-phase module is refused there
    assert "subinterpreters" in str(e), e
    print("subinterpreter ok (the import is refused)")
    raise SystemExit(0)
import obmem
obmem.start()
interpreters.destroy(i)  # runs the sub-interpreter's atexit callbacks
base = obmem.get_traced_memory()[0]
blocks = [api.PyMem_RawMalloc(10000) for _ in range(100)]
grown = obmem.get_traced_memory()[0] - base
assert grown >= 1000000, grown
for p in blocks:
    api.PyMem_RawFree(p)
print("subinterpreter ok")
"""


class AtExitTest(unittest.TestCase):
    def run_child(self, code, expect):
        import subprocess

        child = subprocess.run([sys.executable, "-c", CHILD_PRELUDE + code], capture_output=True,
                               text=True, timeout=120)
        self.assertEqual(child.returncode, 0, child.stderr)
        self.assertIn(expect, child.stdout, child.stderr)

    def test_raw_domain_forwards_at_exit(self):
        self.run_child(AT_EXIT_CHILD, "at-exit ok")

    def test_traced_raw_frees_after_the_switch(self):
        self.run_child(AT_EXIT_TRACED_CHILD, "late ok")

    def test_switch_before_install(self):
        self.run_child(AT_EXIT_FIRST_CHILD, "first ok")

    def test_first_import_in_a_subinterpreter(self):
        try:
            import _xxsubinterpreters  # noqa: F401
        except ImportError:
            self.skipTest("no _xxsubinterpreters")
        self.run_child(SUBINTERPRETER_IMPORT_CHILD, "subinterpreter ok")


class ThreadsTest(unittest.TestCase):
    def test_install_while_threads_allocate(self):
        rng = random.Random(SEED)
        payload = bytes(rng.randrange(256) for _ in range(1 << 16))
        stop = threading.Event()
        errors = []

        def objects(seed):
            r = random.Random(seed)
            keep = []
            while not stop.is_set():
                keep.append([str(r.random()), (r.random(),) * r.randrange(1, 40)])
                if len(keep) > 2000:
                    r.shuffle(keep)
                    del keep[1000:]

        def raw_domain():  # zlib allocates with PyMem_RawMalloc and without the GIL
            while not stop.is_set():
                packed = zlib.compress(payload, 6)
                if zlib.decompress(packed) != payload:
                    errors.append("zlib round trip differs")

        threads = [threading.Thread(target=objects, args=(SEED + i,)) for i in range(3)]
        threads += [threading.Thread(target=raw_domain) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for _ in range(40):
                obmem.install()
                sum(len(str(i)) for i in range(3000))  # give the threads the GIL
                obmem.uninstall()
                sum(len(str(i)) for i in range(3000))
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [], "seed %d" % SEED)


class StatsTest(unittest.TestCase):
    def test_shape(self):
        s = obmem.stats()
        self.assertEqual(len(s["classes"]), 60)
        self.assertEqual([c["block_size"] for c in s["classes"][:4]], [16, 32, 48, 64])
        for key in ("arenas_allocated", "arenas_reclaimed", "arenas_highwater",
                    "arenas_current", "bytes_in_use", "bytes_free_in_pools",
                    "bytes_rounding", "bytes_pool_tails", "bytes_mapped"):
            self.assertIsInstance(s[key], int, key)
        self.assertGreaterEqual(s["arenas_highwater"], s["arenas_current"])

    def test_known_allocation_lands_in_its_class(self):
        # bytes of length 60: offsetof(PyBytesObject, ob_sval) + 1 + 60 = 94 bytes, class 96
        request = sys.getsizeof(b"") + 60
        index, block = class_for(request)
        self.assertEqual(block, 96)
        obmem.install()
        try:
            gc.collect()
            in_use = obmem.stats()["classes"][index]["blocks_in_use"]
            objects = [bytes(60) for _ in range(10_000)]
            grown = obmem.stats()["classes"][index]["blocks_in_use"]
            self.assertGreaterEqual(grown - in_use, 10_000)
            self.assertLess(grown - in_use, 10_000 + 50)
            self.assertEqual(obmem.sizeof(objects[123]), 96)
            del objects
            self.assertLess(obmem.stats()["classes"][index]["blocks_in_use"], in_use + 50)
        finally:
            obmem.uninstall()

    def test_print_stats(self):
        import io

        out = io.StringIO()
        obmem.print_stats(out)
        self.assertIn("arenas", out.getvalue())
        out = io.StringIO()
        obmem.print_stats(file=out, json=True)
        import json

        self.assertIn("classes", json.loads(out.getvalue()))


class SizeofTest(unittest.TestCase):
    """Exact sizes of objects made while obmem is installed (their blocks are obmem's)."""

    def setUp(self):
        obmem.install()

    def tearDown(self):
        obmem.uninstall()

    def check_block(self, obj, expected_total):
        """expected_total: with 16-byte classes up to 512 B, obmem's or pymalloc's (a block
        from before install, e.g. from a free list); malloc's blocks have sizes of their own."""
        f = obmem.footprint(obj)
        if f["allocator"] in ("obmem", "pymalloc"):
            self.assertEqual(f["total"], expected_total, f)
        if f["allocator"] == "obmem":  # a free list may hand out an older block
            self.assertEqual(f["object"], class_for(f["request"])[1], f)
        # CPython's own accounting: what the object and its buffers asked for
        self.assertEqual(f["request"] + f["buffers_request"], sys.getsizeof(obj), f)
        self.assertEqual(obmem.sizeof(obj), f["total"])

    def test_known_objects(self):
        self.check_block([], 64)  # PyGC_Head 16 + PyListObject 40 = 56 -> 64
        with_capacity = []
        with_capacity.append(1)  # capacity 4: 32 bytes of items
        self.check_block(with_capacity, 64 + 32)
        self.check_block([None] * 10, 64 + 80)
        self.check_block({}, 64)  # the empty keys table is static and shared
        d = {fresh_str("ab"): 1}  # keys: 32 + 8 indices + 5 (key, value) entries = 120
        self.check_block(d, 64 + 128)
        self.check_block(10 ** int("20"), 48)  # 24 + 3 digits of 4 bytes = 36 -> 48
        self.check_block(fresh_str("hello world"), 64)  # PyASCIIObject 48 + 12 = 60 -> 64
        self.check_block(bytearray(b"x" * 100), 64 + 112)  # 56 + 101 allocated -> 112
        s = set(range(10))  # a table of 32 entries of 16 bytes
        self.check_block(s, 224 + 512)
        a = array.array("d", [1.0] * 100)  # 800 bytes of items: obmem's medium class 896
        self.check_block(a, obmem.footprint(a)["object"] + class_for(800)[1])
        self.assertEqual(class_for(800)[1], 896)

    def test_against_getsizeof(self):
        for obj in ([1, 2, 3], (1, 2), {"a": 1, "b": 2}, frozenset("abc"), 3.5, 2**100,
                    fresh_str("é" * 30), b"bytes" * 20, bytearray(300),
                    array.array("i", range(1000)), list(range(100_000))):
            f = obmem.footprint(obj)
            self.assertEqual(f["request"] + f["buffers_request"], sys.getsizeof(obj), obj)
            self.assertGreaterEqual(f["total"], sys.getsizeof(obj))
            self.assertLess(f["total"], sys.getsizeof(obj) * 1.3 + 64)

    def test_static_objects(self):
        for obj in (None, True, 5, int):
            self.assertEqual(obmem.footprint(obj)["allocator"], "static", obj)

    def test_instance_values(self):
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        class Slotted:
            __slots__ = ("x", "y")

            def __init__(self, x, y):
                self.x, self.y = x, y

        p = Point(1, 2)
        f = obmem.footprint(p)
        if sys.version_info[:2] == (3, 11):
            self.assertGreater(f["buffers"], 0)  # the values array, outside the object
        self.assertEqual(obmem.sizeof(Slotted(1, 2)), 48)  # GC 16 + 16 + 2 slots -> 48


class DeepSizeofTest(unittest.TestCase):
    def test_shared_objects_count_once(self):
        x = fresh_str("shared " * 10)
        a = [x, x, x]
        self.assertEqual(obmem.deep_sizeof(a), obmem.sizeof(a) + obmem.sizeof(x))
        b = [a, a, (a, x)]
        t = b[2]
        self.assertEqual(obmem.deep_sizeof(b),
                         obmem.sizeof(b) + obmem.sizeof(t) + obmem.deep_sizeof(a))

    def test_cycles_and_depth(self):
        nodes = [[]]
        for _ in range(100_000):  # deeper than any C stack would allow
            nodes.append([])
            nodes[-2].append(nodes[-1])
        nodes[-1].append(nodes[0])  # and a cycle back
        self.assertEqual(obmem.deep_sizeof(nodes[0]), sum(obmem.sizeof(n) for n in nodes))

    def test_program_objects_are_not_entered(self):
        class Record:
            def __init__(self):
                self.a = fresh_str("value")

        r = Record()
        deep = obmem.deep_sizeof(r)
        # the instance, its values or dict, the str; not the class, its methods or module
        self.assertLess(deep, 1000)
        self.assertGreaterEqual(deep, obmem.sizeof(r) + obmem.sizeof(r.a))
        self.assertGreater(obmem.deep_sizeof(Record), 0)  # a type as the root is measured


if __name__ == "__main__":
    try:
        unittest.main()
    except SystemExit as e:
        if e.code:
            print("test_obmem: OBMEM_TEST_SEED=%d" % SEED, file=sys.stderr)
        raise
