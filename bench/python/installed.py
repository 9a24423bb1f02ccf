"""installed.py — runs one bench/python workload after obmem.install() (the obmem-install
column of bench/run_python.sh): CPython's own allocator domains on obmem, no preload.

The workload's code runs with exec in a fresh __main__-like namespace, as `python3 WORKLOAD.py`
would run it: runpy.run_path (used before) made the same workloads execute 4 % more
instructions under pymalloc alone (callgrind, churn.py 0.3: 1606.8M against 1544.0M run
directly; 1555.3M this way), which the column charged to obmem.

Usage: python3 -S installed.py WORKLOAD.py SCALE   (PYTHONPATH: the built module, build/python)
"""
import sys

import obmem

obmem.install()
sys.argv = sys.argv[1:]
with open(sys.argv[0], "rb") as source:
    code = compile(source.read(), sys.argv[0], "exec")
namespace = {"__name__": "__main__", "__file__": sys.argv[0], "__builtins__": __builtins__}
del source
exec(code, namespace)
