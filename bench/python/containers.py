"""containers — building and deleting dicts and lists of every size.

Lists grown by append (CPython over-allocates and reallocs), by comprehension and by
slicing; dicts grown key by key (resizes), built by comprehension, copied, merged, and
emptied by del and pop; nested lists of dicts kept alive for a while and then dropped in
one go, so the allocator sees both growth (realloc of ever larger item arrays, well above
512 bytes) and mass frees.  Deterministic; prints a checksum.
Usage: python3 containers.py [SCALE]
"""
import random
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


def main():
    rng = random.Random(1234)
    rounds = max(1, round(8 * SCALE))
    acc = 0
    crc = 0
    for r in range(rounds):
        # Lists grown by append, of many lengths: item arrays from 32 B to hundreds of KiB.
        lists = []
        for k in range(1200):
            n = rng.choice((3, 10, 40, 200, 1000)) if k % 50 else 8000
            lst = []
            for i in range(n):
                lst.append(i ^ k)
            lists.append(lst)
        acc += sum(len(x) for x in lists)
        # Slices, comprehensions, concatenation, sort of copies.
        derived = [x[::2] + x[1::3] for x in lists[::3]]
        acc += sum(sorted(d)[len(d) // 2] if d else 0 for d in derived)
        del derived

        # Dicts grown key by key (resizing), string and int keys.
        dicts = []
        for k in range(1200):
            n = rng.choice((2, 5, 12, 60, 300)) if k % 40 else 3000
            d = {}
            for i in range(n):
                d[f"k{i}"] = i * k
            dicts.append(d)
        acc += sum(len(d) for d in dicts)
        # Copies, merges, comprehension, deletion.
        merged = [a | b for a, b in zip(dicts[::2], dicts[1::2])]
        acc += sum(len(m) for m in merged)
        inverted = [{v: key for key, v in d.items()} for d in dicts[::5]]
        acc += sum(len(d) for d in inverted)
        for d in dicts[::3]:
            for i in range(0, len(d), 2):
                del d[f"k{i}"]
        for d in dicts[1::3]:
            while len(d) > 1:
                d.popitem()
        acc += sum(len(d) for d in dicts)

        # A table of records (list of dicts) kept while another one is built, then dropped.
        table = [{"id": i, "name": f"row{i}", "tags": [i % 7, i % 11], "score": i * 0.5}
                 for i in range(20000)]
        index = {row["id"]: row for row in table}
        acc += sum(row["tags"][1] for row in table[::97]) + len(index)
        crc = zlib.crc32(repr(table[r * 13]).encode(), crc)
        crc = zlib.crc32(repr(sorted(dicts[r].items())[:5]).encode(), crc)
        del lists, dicts, merged, inverted, table, index
    print(f"checksum {acc:x}-{crc:08x}")


main()
