"""installed.py — runs one bench/python workload after obmem.install() (the obmem-install
column of bench/run_python.sh): CPython's own allocator domains on obmem, no preload.

Usage: python3 -S installed.py WORKLOAD.py SCALE   (PYTHONPATH: the built module, build/python)
"""
import runpy
import sys

import obmem

obmem.install()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
