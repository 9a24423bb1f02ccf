"""instances — many class instances, with and without __slots__.

Creates populations of objects of plain classes (instance __dict__), __slots__ classes and
dataclasses, links them into lists and small trees, updates their attributes (which grows
some instance dicts), reads them back, and drops each population before building the
next — the object graphs of an ORM or a game loop.  Deterministic; prints a checksum.
Usage: python3 instances.py [SCALE]
"""
import dataclasses
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


class Plain:
    def __init__(self, ident, name, value):
        self.ident = ident
        self.name = name
        self.value = value
        self.children = []

    def weight(self):
        return self.value + len(self.children)


class Slotted:
    __slots__ = ("ident", "name", "value", "parent")

    def __init__(self, ident, name, value, parent=None):
        self.ident = ident
        self.name = name
        self.value = value
        self.parent = parent

    def weight(self):
        return self.value + (self.parent.value if self.parent is not None else 0)


class Child(Plain):
    def __init__(self, ident, name, value, extra):
        super().__init__(ident, name, value)
        self.extra = extra


@dataclasses.dataclass
class Record:
    key: int
    label: str
    amount: float
    flags: tuple = ()


def main():
    rounds = max(1, round(10 * SCALE))
    acc = 0
    famount = 0.0
    crc = 0
    for r in range(rounds):
        n = 30000
        plain = [Plain(i, f"p{i}", i % 1000) for i in range(n)]
        for i in range(0, n, 3):  # attributes added after creation: instance dicts grow
            obj = plain[i]
            obj.extra = i * 2
            obj.note = "x" * (i % 40)
            obj.children.append(plain[i - 1])
        slotted = []
        parent = None
        for i in range(n):
            s = Slotted(i, f"s{i}", i % 777, parent)
            slotted.append(s)
            parent = s if i % 10 == 0 else parent
        kids = [Child(i, "c", i % 13, (i, i + 1)) for i in range(n // 2)]
        records = [Record(i, f"r{i % 500}", i * 0.25, (i % 3,)) for i in range(n // 2)]
        acc += sum(o.weight() for o in plain) + sum(s.weight() for s in slotted)
        acc += sum(k.weight() + k.extra[1] for k in kids)
        famount += sum(rec.amount for rec in records if rec.flags[0] == 1)
        for rec in records[::2]:
            rec.amount += 1.0
            rec.label = rec.label.upper()
        crc = zlib.crc32(repr(records[r * 7]).encode(), crc)
        crc = zlib.crc32(str(vars(plain[r * 3])["note"]).encode(), crc)
        # Drop the populations one at a time, the oldest last.
        del records
        del kids
        del slotted, parent, s
        del plain, obj
    print(f"checksum {acc:x}-{crc:08x}-{famount:.3f}")


main()
