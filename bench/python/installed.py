"""installed.py — runs one bench/python workload after obmem.install() (the obmem-install
column of bench/run_python.sh): CPython's own allocator domains on obmem, no preload; the
workload runs as `python3 WORKLOAD.py` would run it (run_script.py).

Usage: python3 -S installed.py WORKLOAD.py SCALE   (PYTHONPATH: the built module, build/python)
"""
import sys

import obmem
from run_script import run_as_main

obmem.install()
sys.argv = sys.argv[1:]
run_as_main(sys.argv[0])
