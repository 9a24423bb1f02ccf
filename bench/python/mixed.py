"""mixed — a "realistic" script: a small log-analytics job with a bit of everything.

Generates web-server log lines, parses them with a regular expression and str methods into
records (namedtuples and small objects), aggregates them with dicts, Counter and
defaultdict, sorts and groups them, renders a text report with f-strings, serialises a
summary to JSON and reads it back, and keeps a session model of objects that point at each
other (reference cycles, left to the gc).  Deterministic; prints a checksum.
Usage: python3 mixed.py [SCALE]
"""
import collections
import json
import random
import re
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0

LINE_RE = re.compile(r'^(\S+) - (\S+) \[(\d+)/(\w+)/(\d+):(\d+):(\d+):(\d+)\] "(\w+) (\S+) HTTP/1\.[01]" (\d{3}) (\d+) "([^"]*)"$')
PATHS = ["/", "/index.html", "/api/v1/items", "/api/v1/items/{}", "/api/v1/users/{}/orders",
         "/static/app.{}.js", "/static/style.css", "/search?q={}", "/login", "/logout"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "python-requests/2.31",
          "Mozilla/5.0 (Macintosh)", "Googlebot/2.1"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
Hit = collections.namedtuple("Hit", "ip user day hour method path status size agent")


class Session:
    def __init__(self, user):
        self.user = user
        self.hits = []
        self.index = {}  # path -> hits; hits point back at the session: cycles

    def add(self, hit):
        entry = {"hit": hit, "session": self}
        self.hits.append(entry)
        self.index.setdefault(hit.path, []).append(entry)


def generate(rng, n):
    for i in range(n):
        ip = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"
        user = "-" if rng.random() < 0.3 else f"user{rng.randrange(400)}"
        path = rng.choice(PATHS).format(rng.randrange(1000))
        yield (f'{ip} - {user} [{1 + i * 28 // n:02d}/Feb/2024:{rng.randrange(24):02d}:'
               f'{rng.randrange(60):02d}:{rng.randrange(60):02d}] "{rng.choice(METHODS)} {path} HTTP/1.1" '
               f'{rng.choice((200, 200, 200, 301, 404, 500))} {rng.randrange(100, 50000)} "{rng.choice(AGENTS)}"')


def parse(line):
    m = LINE_RE.match(line)
    if m is None:
        return None
    ip, user, day, _mon, _year, hour, _mi, _s, method, path, status, size, agent = m.groups()
    return Hit(ip, user, int(day), int(hour), method, path.split("?")[0], int(status), int(size), agent)


def analyse(hits):
    by_status = collections.Counter(h.status for h in hits)
    by_path = collections.defaultdict(list)
    for h in hits:
        key = re.sub(r"\d+", "N", h.path)
        by_path[key].append(h.size)
    per_hour = collections.Counter((h.day, h.hour) for h in hits)
    sessions = {}
    for h in hits:
        if h.user != "-":
            s = sessions.get(h.user)
            if s is None:
                s = sessions[h.user] = Session(h.user)
            s.add(h)
    top = sorted(by_path.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:20]
    report_lines = [f"{path:<30} {len(sizes):>7} {sum(sizes) / len(sizes):>10.1f} {max(sizes):>7}"
                    for path, sizes in top]
    busiest = sorted(sessions.values(), key=lambda s: (-len(s.hits), s.user))[:10]
    for s in busiest:
        paths = sorted(s.index, key=lambda p: (-len(s.index[p]), p))[:3]
        report_lines.append(f"{s.user}: {len(s.hits)} hits, top {', '.join(paths)}")
    summary = {
        "status": {str(k): v for k, v in sorted(by_status.items())},
        "paths": {p: {"n": len(v), "bytes": sum(v)} for p, v in sorted(by_path.items())},
        "hours": [[d, h, n] for (d, h), n in sorted(per_hour.items())],
        "sessions": {u: [e["hit"].path for e in s.hits[:50]] for u, s in sorted(sessions.items())},
    }
    return "\n".join(report_lines), summary


def main():
    rng = random.Random(2024)
    rounds = max(1, round(8 * SCALE))
    crc = 0
    total = 0
    for r in range(rounds):
        lines = list(generate(rng, 12500))
        hits = [h for h in map(parse, lines) if h is not None]
        report, summary = analyse(hits)
        text = json.dumps(summary, sort_keys=True)
        back = json.loads(text)
        total += len(hits) + len(report) + len(back["paths"]) + sum(n for _, _, n in back["hours"])
        crc = zlib.crc32(report.encode(), crc)
        crc = zlib.crc32(text.encode(), crc)
        del lines, hits, report, summary, text, back
    print(f"checksum {total:x}-{crc:08x}")


main()
