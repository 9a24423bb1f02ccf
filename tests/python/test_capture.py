"""test_capture.py — capture files of Python programs: `python -m obmem run` and `obmem run
script.py`, read by `obmem report`, `obmem diff` and the budgets (python/capture.c,
python/obmem/__main__.py, src/trace/interp.c, tools/obmem).

Run by ctest (tests/python/CMakeLists.txt) as test_capture.py OBMEM, with PYTHONPATH at the
built module; OBMEM is the obmem command.  Deterministic: fixed sizes and counts, no timing.
The program traced is PROGRAM below, written to a temporary directory; the lines allocations
are attributed to are found by its "# line: NAME" markers.

What is checked:
  - exact attribution in `obmem report --json` and in the text: a leak of K blocks of
    bytes(S) at a known function and line, exactly K x sys.getsizeof(bytes(S)) bytes; the peak
    made by a known function (N blocks live at once, the top site at the peak); two threads'
    allocations at their function and line, the threads in the capture;
  - `obmem run script.py` (the C command running the interpreter) gives the same numbers;
    --native keeps the Python site (the innermost Python frame) and records native frames;
    --sample writes a sampled capture; -m MODULE runs a module;
  - `obmem diff --json` of two runs with K and 2K leaked blocks: the leak site's change;
  - budgets: --max-leak/--max-peak under and over, from both commands (exit 0 and 1); the
    program's own exit status is passed on; the budgets count peak and leak as the report
    does (exact and sampled);
  - a forked child's own capture (%p) with its own allocations;
  - bad input: unknown options and a missing script (exit 2, named); a damaged PYFRAME record
    refused by `obmem report` with its offset named (exit 2).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

OBMEM = None  # the obmem command, from argv
# the leak: K blocks of bytes(S), more than the import system's code objects live at exit
# (3.12: 469 KiB, the largest leak when S was 1000)
K, S = 300, 3000
N, S2 = 40, 50000  # the peak: N blocks of bytes(S2) live at once
T, S3 = 64, 700  # each of two threads keeps T blocks of bytes(S3)

PROGRAM = '''
import sys, threading
K, S, N, S2, T, S3 = %d, %d, %d, %d, %d, %d
if len(sys.argv) > 1:
    K = int(sys.argv[1])
LEAKED = [None] * K
KEPT = {}
BOTH = threading.Barrier(2)  # the workers live at once: each its own thread slot

def leak():
    for i in range(K):
        LEAKED[i] = bytes(S)  # line: leak

def make_peak():
    blocks = [None] * N
    for i in range(N):
        blocks[i] = bytes(S2)  # line: peak
    return len(blocks)

def worker(name):
    BOTH.wait()
    mine = [None] * T
    for i in range(T):
        mine[i] = bytes(S3)  # line: worker
    KEPT[name] = mine

make_peak()
leak()
threads = [threading.Thread(target=worker, args=("w%%d" %% i,), name="w%%d" %% i)
           for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if len(sys.argv) > 2:
    sys.exit(int(sys.argv[2]))
''' % (K, S, N, S2, T, S3)


def line_of(name):
    for number, text in enumerate(PROGRAM.splitlines(), 1):
        if text.rstrip().endswith("# line: " + name):
            return number
    raise AssertionError("no line marked %r" % name)


def run(args, expect=0, env=None):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != expect:
        raise AssertionError("%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), p.returncode, expect, p.stdout, p.stderr))
    return p


def report(path):
    return json.loads(run([OBMEM, "report", "--json", "--top", "50", path]).stdout)


def site(rows, function, line):
    for row in rows:
        if row["function"] == function and row["line"] == line:
            return row
    raise AssertionError("no site %s line %d in %s" % (function, line, rows))


class CaptureTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.script = os.path.join(cls.dir, "known.py")
        with open(cls.script, "w") as f:
            f.write(PROGRAM)
        cls.cap = os.path.join(cls.dir, "known.cap")
        cls.run_stderr = run([sys.executable, "-m", "obmem", "run", "-o", cls.cap,
                              cls.script]).stderr
        cls.report = report(cls.cap)
        cls.size = sys.getsizeof(bytes(S))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_prints_where(self):
        self.assertIn("capture written to %s" % self.cap, self.run_stderr)

    def test_leak_exact(self):
        row = site(self.report["leaks"], "leak", line_of("leak"))
        self.assertEqual(row["file"], self.script)
        self.assertEqual(row["count"], K)
        self.assertEqual(row["bytes"], K * self.size)
        self.assertEqual(self.report["leaks"][0]["function"], "leak")  # the largest leak
        total = site(self.report["sites_by_total"], "leak", line_of("leak"))
        self.assertEqual((total["count"], total["bytes"]), (K, K * self.size))

    def test_leak_text(self):
        text = run([OBMEM, "report", "--top", "3", self.cap]).stdout
        leaks = text[text.index("top sites by bytes leaked"):]
        self.assertIn("leak (%s:%d)" % (self.script, line_of("leak")), leaks.splitlines()[1])

    def test_peak(self):
        top = self.report["sites_at_peak"][0]
        self.assertEqual((top["function"], top["line"]), ("make_peak", line_of("peak")))
        self.assertEqual(top["count"], N)
        self.assertEqual(top["bytes"], N * sys.getsizeof(bytes(S2)))
        self.assertGreaterEqual(self.report["peak_bytes"], N * S2)
        self.assertTrue(self.report["complete"])

    def test_threads(self):
        row = site(self.report["leaks"], "worker", line_of("worker"))
        self.assertEqual(row["count"], 2 * T)
        self.assertEqual(row["bytes"], 2 * T * sys.getsizeof(bytes(S3)))
        # the main thread and the two workers (CPython 3.11 does not name OS threads)
        tids = {t["tid"] for t in self.report["threads"]}
        self.assertGreaterEqual(len(tids), 3, self.report["threads"])

    def test_obmem_run_script(self):
        cap = os.path.join(self.dir, "cli-%p.cap")
        p = run([OBMEM, "run", "-o", cap, self.script])
        path = p.stderr.split("capture written to ")[1].split()[0]
        r = report(path)
        row = site(r["leaks"], "leak", line_of("leak"))
        self.assertEqual((row["count"], row["bytes"]), (K, K * self.size))
        self.assertGreaterEqual(r["peak_bytes"], N * S2)

    def test_native(self):
        cap = os.path.join(self.dir, "native.cap")
        run([OBMEM, "run", "--native", "-o", cap, self.script])
        r = report(cap)
        row = site(r["leaks"], "leak", line_of("leak"))
        self.assertEqual((row["count"], row["bytes"]), (K, K * self.size))
        self.assertTrue(r["python_stacks"] and r["native_stacks"])
        self.assertTrue(self.report["python_stacks"] and not self.report["native_stacks"])
        text = run([OBMEM, "report", "--top", "1", cap]).stdout
        self.assertIn("Python stacks with native frames", text.splitlines()[0])

    def test_sampled(self):
        cap = os.path.join(self.dir, "sampled.cap")
        run([sys.executable, "-m", "obmem", "run", "--sample", "64K", "-o", cap, self.script])
        r = report(cap)
        self.assertEqual(r["mode"], "sampled")
        self.assertEqual(r["sample_mean_bytes"], 65536)

    def test_budget_counts_as_report(self):
        # the budgets' replay (python/capture.c) is the report's (src/capture/live.c): the
        # same peak, leak and allocations, exact and sampled
        sampled = os.path.join(self.dir, "summary-sampled.cap")
        run([sys.executable, "-m", "obmem", "run", "--sample", "16K", "-o", sampled,
             self.script])
        import obmem
        for path in (self.cap, sampled):
            r, s = report(path), obmem._capture_summary(path)
            self.assertEqual(round(s["peak_bytes"]), r["peak_bytes"], path)
            self.assertEqual(round(s["leak_bytes"]), r["leaked_bytes"], path)
            self.assertEqual(s["allocations"], r["allocations"], path)
            self.assertTrue(s["complete"])

    def test_module(self):
        cap = os.path.join(self.dir, "module.cap")
        env = dict(os.environ, PYTHONPATH=self.dir + os.pathsep + os.environ["PYTHONPATH"])
        run([OBMEM, "run", "-o", cap, "-m", "known"], env=env)
        row = site(report(cap)["leaks"], "leak", line_of("leak"))
        self.assertEqual(row["count"], K)

    def test_diff(self):
        cap2 = os.path.join(self.dir, "twice.cap")
        run([sys.executable, "-m", "obmem", "run", "-o", cap2, self.script, str(2 * K)])
        d = json.loads(run([OBMEM, "diff", "--json", "--top", "50", self.cap, cap2]).stdout)
        row = site(d["sites"], "leak", line_of("leak"))
        self.assertEqual(row["total_bytes"], [K * self.size, 2 * K * self.size])
        self.assertEqual(row["leaked_bytes"], [K * self.size, 2 * K * self.size])

    def test_budgets(self):
        cap = os.path.join(self.dir, "budget.cap")
        leak = K * self.size
        for command in ([OBMEM, "run"], [sys.executable, "-m", "obmem", "run"]):
            p = run(command + ["-o", cap, "--max-leak", "1K", self.script], expect=1)
            self.assertIn("exceeds --max-leak 1024", p.stderr)
            p = run(command + ["-o", cap, "--max-peak", "100K", self.script], expect=1)
            self.assertIn("exceeds --max-peak 102400", p.stderr)
            run(command + ["-o", cap, "--max-leak", str(leak * 20), "--max-peak", "1G",
                           self.script])
        # the program's exit status is passed on
        run([sys.executable, "-m", "obmem", "run", "-o", cap, self.script, str(K), "3"],
            expect=3)
        run([OBMEM, "run", "-o", cap, self.script, str(K), "4"], expect=4)

    def test_fork(self):
        # a forked child writes its own capture (%p) with its own allocations, and says so
        script = os.path.join(self.dir, "forks.py")
        with open(script, "w") as f:
            f.write("import os\n"
                    "def child():\n"
                    "    kept = [None] * %d\n"
                    "    for i in range(len(kept)):\n"
                    "        kept[i] = bytes(%d)\n"
                    "    return kept\n"
                    "pid = os.fork()\n"
                    "if pid == 0:\n"
                    "    kept = child()\n"
                    "else:\n"
                    "    os.waitpid(pid, 0)\n" % (K, S))
        p = run([sys.executable, "-m", "obmem", "run", "-o",
                 os.path.join(self.dir, "fork-%p.cap"), script])
        paths = [line.split("capture written to ")[1].split()[0]
                 for line in p.stderr.splitlines() if "capture written to" in line]
        self.assertEqual(len(set(paths)), 2, p.stderr)
        found = [r for r in map(report, paths)
                 if any(row["function"] == "child" for row in r["leaks"])]
        self.assertEqual(len(found), 1)
        row = [row for row in found[0]["leaks"] if row["function"] == "child"][0]
        self.assertEqual((row["count"], row["bytes"]), (K, K * self.size))

    def test_bad_options(self):
        p = run([sys.executable, "-m", "obmem", "run", "--bogus", self.script], expect=2)
        self.assertIn("unknown option '--bogus'", p.stderr)
        p = run([sys.executable, "-m", "obmem", "run", "--sample", "12Q", self.script], expect=2)
        self.assertIn("--sample: bad size '12Q'", p.stderr)
        p = run([sys.executable, "-m", "obmem", "run", os.path.join(self.dir, "nope.py")],
                expect=2)
        self.assertIn("nope.py: no such file", p.stderr)
        p = run([sys.executable, "-m", "obmem", "run"], expect=2)
        self.assertIn("needs a program", p.stderr)
        p = run([OBMEM, "run", "-m"], expect=2)
        self.assertIn("-m needs a module name", p.stderr)

    def test_damaged_pyframe(self):
        # the capture's header, then a block of stream 0 holding a PYFRAME whose function
        # name is longer than the format allows (checksum right: the record is at fault)
        with open(self.cap, "rb") as f:
            header = f.read(64)
        payload = bytes([0x16, 7]) + bytes([0x88, 0x27]) + b"f" * 16  # length 5000
        body = struct.pack("<IQ", 0, 0) + payload  # stream 0, base time 0
        crc = zlib.crc32(body) & 0xffffffff
        block = struct.pack("<III", 0x4B4C424F, len(payload), crc) + body
        bad = os.path.join(self.dir, "bad.cap")
        with open(bad, "wb") as f:
            f.write(header + block)
        p = run([OBMEM, "report", bad], expect=2)
        self.assertIn("%s: offset 88: length 5000 exceeds 1024" % bad, p.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_capture.py OBMEM")
    OBMEM = sys.argv.pop(1)
    unittest.main()
