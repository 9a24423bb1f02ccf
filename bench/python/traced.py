"""traced.py — runs one bench/python workload under a tracing mode (bench/run_python_trace.sh).

Usage: python3 -S traced.py MODE WORKLOAD.py SCALE   (PYTHONPATH: the built module, build/python)
MODE:
  obmem        obmem.install(), no tracing (the base of the obmem modes)
  obmem-N      obmem.install(), then obmem.start(N): every MEM/OBJ block with N Python frames
  obmem-N-sB   obmem.install(), then obmem.start(N, sample=B): sampled mode, mean B bytes (B: a
               number with an optional K or M suffix, e.g. obmem-128-s512K)
  pymalloc     CPython's own allocator, no tracing (the base of the tracemalloc modes)
  tmalloc-N    tracemalloc.start(N) on CPython's own allocator
Tracing starts just before the workload runs and stays on to the end (the traces of its live
blocks included in the peak RSS), as a program that traces would run.
"""
import sys

from run_script import run_as_main

mode, script = sys.argv[1], sys.argv[2]
if mode.startswith("obmem"):
    import obmem

    obmem.install()
    if mode != "obmem":
        parts = mode.split("-")
        sample = 0
        if len(parts) == 3 and parts[2].startswith("s"):
            number = parts[2][1:]
            unit = {"K": 1024, "M": 1024 * 1024}.get(number[-1:], 1)
            sample = int(number.rstrip("KM")) * unit
        obmem.start(int(parts[1]), sample=sample, seed=1 if sample else 0)
elif mode.startswith("tmalloc-"):
    import tracemalloc

    tracemalloc.start(int(mode.split("-")[1]))
elif mode != "pymalloc":
    sys.exit("traced.py: unknown mode %r" % mode)
sys.argv = sys.argv[2:]
run_as_main(script)  # as `python3 WORKLOAD.py` runs it, the same way for every mode
