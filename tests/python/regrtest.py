"""regrtest.py — CPython's own regression tests with obmem installed, against a plain run.

The same test modules run twice at once (2 cores): plain (pymalloc), and after
`import obmem; obmem.install()` in the same interpreter, which then runs regrtest in-process
(`python -m test` through runpy), so every test's objects come from obmem from the start of
the run.  Each run writes regrtest's JUnit XML; tests/preload/junit_results.py reduces it to
one line per test case, and the two lists must be identical (a case that fails plainly on
this machine must fail the same way on obmem, no more).  A run that crashes leaves no XML and
fails.  The obmem run must end with obmem still installed, after more than 10^6 allocations
(and still tracing, with OBMEM_REGRTEST_NFRAME=N: obmem.start(N) after install()).
When the lists differ, the modules concerned run once more in both modes (timing-sensitive
cases can fail by chance on a loaded machine); only a difference that repeats fails.

Usage: python3 regrtest.py WORKDIR MODULE...   (PYTHONPATH: where the obmem module is)
Exit 77 (ctest's skip) when the interpreter has no `test` package.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "preload"))
import junit_results  # noqa: E402  (tests/preload/junit_results.py)

# OBMEM_REGRTEST_NFRAME=N (> 0): the obmem run also traces, obmem.start(N) after install(),
# and must end still tracing.
NFRAME = int(os.environ.get("OBMEM_REGRTEST_NFRAME", "0") or "0")
INSTALL_THEN_REGRTEST = (
    "import atexit, runpy, obmem\n"
    "obmem.install()\n"
    + ("obmem.start(%d)\n" % NFRAME if NFRAME > 0 else "") +
    "def report():\n"
    "    n = sum(c['allocations'] for c in obmem.stats()['classes'])\n"
    "    print('obmem-regrtest: installed=%s tracing=%s allocations=%d' %\n"
    "          (obmem.is_installed(), obmem.is_tracing(), n))\n"
    "atexit.register(report)\n"
    "runpy.run_module('test', run_name='__main__', alter_sys=True)\n")


def start(work, mode, tag, modules):
    directory = os.path.join(work, "%s-%s" % (mode, tag))
    os.makedirs(os.path.join(directory, "tmp"), exist_ok=True)
    env = dict(os.environ, TMPDIR=os.path.join(directory, "tmp"), PYTHONHASHSEED="0")
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)  # the runs change directory
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in paths if p)
    env.pop("PYTHONMALLOC", None)
    env.pop("OBMEM_PYTHON", None)
    xml = directory + ".xml"
    if os.path.exists(xml):
        os.remove(xml)
    head = [sys.executable, "-c", INSTALL_THEN_REGRTEST] if mode == "obmem" else \
        [sys.executable, "-m", "test"]
    log = open(directory + ".log", "w")
    process = subprocess.Popen(head + ["--junit-xml", xml] + modules, cwd=directory, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    return process, log, xml


def results(xml, log_path):
    try:
        import xml.etree.ElementTree as ET
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as e:
        with open(log_path) as f:
            sys.stderr.write("".join(f.readlines()[-40:]))
        raise SystemExit("regrtest.py: %s left no readable results (crashed?): %s" % (xml, e))
    return sorted("%s %s" % (case.get("name"), junit_results.outcome(case))
                  for case in root.iter("testcase"))


def run_both(work, tag, modules):
    runs = {mode: start(work, mode, tag, modules) for mode in ("plain", "obmem")}
    out = {}
    for mode, (process, log, xml) in runs.items():
        process.wait()
        log.close()
        out[mode] = results(xml, log.name)
    with open(runs["obmem"][1].name) as f:
        lines = [line for line in f if line.startswith("obmem-regrtest:")]
    if not lines or "installed=True" not in lines[-1] or \
            (NFRAME > 0 and "tracing=True" not in lines[-1]) or \
            int(lines[-1].rsplit("=", 1)[1]) < 1_000_000:
        raise SystemExit("regrtest.py: the obmem run did not end installed%s with > 10^6 "
                         "allocations: %r" % (" and tracing" if NFRAME > 0 else "", lines))
    print("regrtest.py: %s: %d modules, %d test cases, %s" %
          (tag, len(modules), len(out["plain"]), lines[-1].strip()))
    return out["plain"], out["obmem"]


def module_of(case):
    # "test.test_dict.DictTest.test_x passed" -> "test_dict"
    parts = case.split()[0].split(".")
    return parts[1] if parts[0] == "test" and len(parts) > 1 else parts[0]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    work, modules = sys.argv[1], sys.argv[2:]
    try:
        import test.libregrtest  # noqa: F401
        for m in modules:
            __import__("test." + m)
    except ImportError as e:
        print("regrtest.py: skipped: %s has no CPython test package (%s)" % (sys.executable, e))
        return 77
    os.makedirs(work, exist_ok=True)
    plain, obmem = run_both(work, "all", modules)
    if plain == obmem:
        return 0
    differing = sorted({module_of(c) for c in set(plain) ^ set(obmem)} & set(modules))
    print("regrtest.py: the runs differ in %s; once more" % " ".join(differing or modules))
    plain, obmem = run_both(work, "again", differing or modules)
    if plain == obmem:
        return 0
    for line in sorted(set(plain) - set(obmem)):
        print("plain only:", line)
    for line in sorted(set(obmem) - set(plain)):
        print("obmem only:", line)
    return 1


if __name__ == "__main__":
    sys.exit(main())
