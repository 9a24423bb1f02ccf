"""churn — many small, short-lived objects: ints, floats, tuples, small lists and dicts,
bound methods, closures, generators, slices, bytes; almost every one dropped at once.

The pattern pymalloc is built for: a steady stream of 16..512-byte blocks freed in about
the order they were made, with a small working set.  Deterministic; prints a checksum.
Usage: python3 churn.py [SCALE]
"""
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def pairs(n):
    for i in range(n):
        yield i, i * 7 + 3


def main():
    rounds = max(1, round(110 * SCALE))
    total = 0
    ftotal = 0.0
    crc = 0
    for r in range(rounds):
        window = []  # a small working set that keeps turning over
        for i, j in pairs(4000):
            big = (i + 1000) * (j + 1000)  # ints above the small-int cache
            f = (i + 0.5) * 1.25
            t = (i, j, big, f)
            lst = [i, j, big]
            d = {"i": i, "j": j}
            p = Point(i - 2000, j - 9000)
            m = p.norm1  # bound method object
            total += m() + len(lst) + d["j"] - t[0] + big % 97
            ftotal += f
            s = str(big)
            b = s.encode()
            total += len(b[1:-1])
            if i % 8 == 0:
                window.append((t, lst))
                if len(window) > 64:
                    del window[:32]
        fn = (lambda k, r=r: k * r)  # closures
        total += sum(fn(k) for k in range(200))
        crc = zlib.crc32(repr(window[-1]).encode(), crc)
    print(f"checksum {total:x}-{crc:08x}-{ftotal:.6e}")


main()
