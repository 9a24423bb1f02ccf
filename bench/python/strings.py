"""strings — string building: str.join, += concatenation, f-strings, %-format and
str.format, plus the splitting, replacing and encoding that come with them.

Short strings are small objects; joined and concatenated ones grow through realloc into
the kilobytes and beyond (CPython resizes a string in place when it holds the only
reference, so `s += t` is a realloc).  Deterministic; prints a checksum.
Usage: python3 strings.py [SCALE]
"""
import io
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0

NAMES = ["ada", "grace", "linus", "guido", "barbara", "ken", "dennis", "margaret", "alan", "édith"]


def main():
    rounds = max(1, round(80 * SCALE))
    crc = 0
    total = 0
    for r in range(rounds):
        # f-strings and formatting: many short-lived small strings.
        lines = []
        for i in range(6000):
            name = NAMES[(i + r) % len(NAMES)]
            lines.append(f"{i:06d} {name:>10} {i * 1.5:10.2f} {name.upper()}|{i % 7}")
            if i % 4 == 0:
                lines.append("%s=%d (%x)" % (name, i, i * r))
            if i % 5 == 0:
                lines.append("{}:{}:{!r}".format(r, i, name))
        # join into one large string, then split it again.
        text = "\n".join(lines)
        words = text.split()
        total += len(text) + len(words)
        # += concatenation: grows one string by realloc.
        s = ""
        for w in words[:20000]:
            s += w
            s += ","
        total += len(s)
        # replace / upper / encode / decode round trip on the large string.
        t = text.replace(" ", "_").replace("|", " | ")
        b = t.encode("utf-8")
        total += len(b) + len(b.decode("utf-8").lower())
        # StringIO and many medium joins (CSV-like rows).
        out = io.StringIO()
        for i in range(0, len(words) - 8, 8):
            out.write(";".join(words[i:i + 8]))
            out.write("\n")
        csv = out.getvalue()
        total += csv.count(";")
        crc = zlib.crc32(csv[-200:].encode(), crc)
        crc = zlib.crc32(s[-100:].encode(), crc)
        del lines, text, words, s, t, b, out, csv
    print(f"checksum {total:x}-{crc:08x}")


main()
