"""sizes.py — which structure is lighter?  The same 100 000 records of three fields (an int
id, a name str and a float score) held eight ways, each measured by obmem.deep_sizeof (the
allocator blocks really used, each object once) next to the sum of sys.getsizeof over the
same objects (what CPython's own accounting claims).

    PYTHONPATH=build/python python3 examples/python/sizes.py [N]

obmem.install() comes first, so every block measured is obmem's and its size exact; without
it the blocks are pymalloc's and malloc's, sized by their rounding rules (docs/python.md).
The ints and floats are made anew per record (no small-int cache), the names are distinct
strs, as real data would be.
"""
import array
import dataclasses
import gc
import sys
from collections import namedtuple

import obmem


class Plain:
    def __init__(self, id, name, score):
        self.id, self.name, self.score = id, name, score


class Slotted:
    __slots__ = ("id", "name", "score")

    def __init__(self, id, name, score):
        self.id, self.name, self.score = id, name, score


Row = namedtuple("Row", "id name score")


@dataclasses.dataclass(slots=True)
class SlottedData:
    id: int
    name: str
    score: float


def records(n):
    base = 1_000_000  # beyond the small-int cache: every id is an object of its own
    return [(base + i, "name-%06d" % i, i * 0.5) for i in range(n)]


def build(kind, rows):
    if kind == "list of lists":
        return [list(r) for r in rows]
    if kind == "tuple of tuples":
        return tuple(tuple(r) for r in rows)
    if kind == "list of dicts":
        return [{"id": a, "name": b, "score": c} for a, b, c in rows]
    if kind == "class instances":
        return [Plain(*r) for r in rows]
    if kind == "__slots__ instances":
        return [Slotted(*r) for r in rows]
    if kind == "namedtuples":
        return [Row(*r) for r in rows]
    if kind == "dataclass(slots=True)":
        return [SlottedData(*r) for r in rows]
    if kind == "array.array columns":
        # the name column stays a list of str: array holds numbers only
        return (array.array("q", (r[0] for r in rows)), [r[1] for r in rows],
                array.array("d", (r[2] for r in rows)))
    raise ValueError(kind)


KINDS = ["list of lists", "tuple of tuples", "list of dicts", "class instances",
         "__slots__ instances", "namedtuples", "dataclass(slots=True)", "array.array columns"]


def getsizeof_sum(root):
    """sys.getsizeof over the objects deep_sizeof counts (gc.get_referents, each once; types,
    modules and functions not entered)."""
    import types
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
            types.CodeType)
    seen, stack, total = {id(root)}, [root], 0
    while stack:
        o = stack.pop()
        total += sys.getsizeof(o)
        for r in gc.get_referents(o):
            if id(r) not in seen and not isinstance(r, skip):
                seen.add(id(r))
                stack.append(r)
    return total


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    obmem.install()
    rows = records(n)
    results = []
    for kind in KINDS:
        data = build(kind, rows)
        results.append((kind, obmem.deep_sizeof(data), getsizeof_sum(data)))
        del data
    lightest = min(r[1] for r in results)
    print("%d records of (int id, str name, float score); bytes per record, with the "
          "records' own ints, strs and floats" % n)
    print()
    print("| structure | obmem.deep_sizeof | sum of sys.getsizeof | real / claimed | "
          "vs lightest |")
    print("|---|---:|---:|---:|---:|")
    for kind, real, claimed in sorted(results, key=lambda r: r[1]):
        print("| %s | %.1f B (%.1f MiB) | %.1f B | %.2f | %.2fx |" %
              (kind, real / n, real / 2**20, claimed / n, real / claimed, real / lightest))


if __name__ == "__main__":
    main()
