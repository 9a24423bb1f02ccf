"""junit_results.py — one line per test case from CPython regrtest's --junit-xml file.

Prints "<test id> <outcome>" sorted by id, outcome one of passed, failure, error, skipped
(run times are dropped), then a line "total N" — the form preload_python.sh compares between
a run on glibc and a run on obmem.  A missing or unreadable file is an error (exit 2): a
crashed interpreter must not look like "no tests".
Usage: python3 junit_results.py FILE.xml
"""
import sys
import xml.etree.ElementTree as ET


def outcome(case):
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


def main():
    if len(sys.argv) != 2:
        print("usage: junit_results.py FILE.xml", file=sys.stderr)
        return 2
    try:
        root = ET.parse(sys.argv[1]).getroot()
    except (OSError, ET.ParseError) as e:
        print("junit_results.py: %s: %s" % (sys.argv[1], e), file=sys.stderr)
        return 2
    lines = sorted("%s %s" % (case.get("name"), outcome(case)) for case in root.iter("testcase"))
    for line in lines:
        print(line)
    print("total %d" % len(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
