"""leaky.py — a small Python program with a known leak and a known peak, for `obmem run`.

A request handler caches every response in a module-level dict that nobody trims (the leak:
about 2 MiB in `handle`), and a nightly report builds all of its lines in a list before
writing them (the peak: about 8 MiB in `build_report`, freed at once).  Profile it with

    build/tools/obmem run -o leaky.cap examples/python/leaky.py
    build/tools/obmem report leaky.cap

or `PYTHONPATH=build/python python3 -m obmem run -o leaky.cap examples/python/leaky.py`:
the report names `handle (examples/python/leaky.py:LINE)` under the leaks and
`build_report (...)` at the peak.
"""
import sys

CACHE = {}


def render(user, page):
    return ("<html><body>user %d, page %d</body></html>" % (user, page)).ljust(400)


def handle(user, page):
    key = (user, page)
    response = CACHE.get(key)
    if response is None:
        response = CACHE[key] = render(user, page).encode()  # cached forever: the leak
    return len(response)


def build_report(n):
    lines = ["%08d: %s" % (i, "x" * 100) for i in range(n)]  # all at once: the peak
    return sum(len(line) for line in lines)


def main():
    served = sum(handle(user, page) for user in range(100) for page in range(40))
    written = build_report(50000)
    print("served %d bytes, report of %d bytes" % (served, written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
