"""run_script.py — runs a workload script the way `python3 WORKLOAD.py` does, for the runners
that set something up first (installed.py, traced.py).

runpy.run_path, used before, made the same workloads execute 4 % more instructions under
pymalloc alone (callgrind, churn.py 0.3: 1606.8M against 1544.0M run directly; 1555.3M this
way): exec of the compiled file in a fresh __main__ namespace.
"""


def run_as_main(path):
    with open(path, "rb") as source:
        code = compile(source.read(), path, "exec")
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
