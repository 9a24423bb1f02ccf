"""python -m obmem run [options] (script.py | -m module | -c command) [args...]

Runs a Python program as __main__ with obmem installed in CPython's allocator domains and
the tracer writing a capture file (docs/capture-format.md): every allocation of the RAW, MEM
and OBJ domains with its Python stack (function, file, line; with --native, merged with the
native frames), the thread and the time.  `obmem report FILE`, `obmem diff A B` and the
budgets read it as they read a C program's capture.  docs/python.md, "Capture files".
"""
import os
import runpy
import sys
import traceback

import obmem

USAGE = """\
usage: python -m obmem run [-o FILE] [--native] [--sample BYTES] [--max-frames N]
                           [--max-peak SIZE] [--max-leak SIZE]
                           (script.py | -m module | -c command) [args...]

Runs the program with obmem installed and writes a capture of its allocations with their
Python stacks (default obmem-%p.cap; %p becomes the pid), then prints where it went.
  -o FILE          the capture path
  --native         merge the native (C) frames with the Python frames
  --sample BYTES   sampled mode, one sample per BYTES on average (K, M, G suffixes)
  --max-frames N   deepest stack recorded (1..256, default 64)
  --max-peak SIZE  exit 1 with a message when the peak exceeds SIZE
  --max-leak SIZE  exit 1 with a message when more than SIZE is live at the end
Exit status: the program's, 1 when a budget was exceeded, 2 for bad options.
"""


class BadUsage(Exception):
    pass


def parse_size(option, text):
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    if t.endswith("b"):
        t = t[:-1]
    if t.endswith("i") and len(t) > 1 and t[-2] in "kmg":
        t = t[:-1]
    unit = t[-1:] if t[-1:] in ("k", "m", "g") else ""
    number = t[:-1] if unit else t
    if not number.isdigit():
        raise BadUsage("%s: bad size '%s' (bytes, or with K, M, G)" % (option, text))
    return int(number) * units[unit]


def parse(argv):
    opts = {"out": "obmem-%p.cap", "native": False, "sample": 0, "max_frames": 64,
            "max_peak": None, "max_leak": None}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            return None, None, None
        if a == "--":
            i += 1
            break
        if a in ("-m", "-c") or not a.startswith("-"):
            break
        if a == "--native":
            opts["native"] = True
            i += 1
            continue
        name, eq, value = a.partition("=")
        if name not in ("-o", "--sample", "--max-frames", "--max-peak", "--max-leak"):
            raise BadUsage("unknown option '%s'" % a)
        if not eq:
            if i + 1 >= len(argv):
                raise BadUsage("%s needs a value" % name)
            value = argv[i + 1]
            i += 1
        i += 1
        if name == "-o":
            if not value:
                raise BadUsage("-o needs a file name")
            opts["out"] = value
        elif name == "--max-frames":
            if not value.isdigit() or not 1 <= int(value) <= 256:
                raise BadUsage("--max-frames needs a number from 1 to 256, not '%s'" % value)
            opts["max_frames"] = int(value)
        else:
            size = parse_size(name, value)
            if name == "--sample":
                if size == 0:
                    raise BadUsage("--sample needs a size above 0")
                opts["sample"] = size
            else:
                opts[name[2:].replace("-", "_")] = size
    rest = argv[i:]
    if not rest:
        raise BadUsage("needs a program: script.py, -m module or -c command")
    if rest[0] in ("-m", "-c"):
        if len(rest) < 2:
            raise BadUsage("%s needs a value" % rest[0])
        return opts, (rest[0], rest[1]), rest[2:]
    return opts, ("script", rest[0]), rest[1:]


def run_target(kind, target, args):
    """Runs the program as __main__, as the interpreter would; returns its exit status."""
    if kind == "script":
        sys.argv = [target] + args
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    elif kind == "-m":
        sys.argv = [target] + args  # runpy puts the module's path in argv[0]
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c"] + args
        sys.path[0] = ""
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


def exit_status(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: python -m obmem run [options] (script.py | -m module | -c command) [args...]"
              "\n(python -m obmem run --help)")
        return 0 if argv else 2
    if argv[0] != "run":
        print("python -m obmem: unknown command '%s' (python -m obmem run --help)" % argv[0],
              file=sys.stderr)
        return 2
    try:
        opts, program, args = parse(argv[1:])
    except BadUsage as e:
        print("python -m obmem run: %s (python -m obmem run --help)" % e, file=sys.stderr)
        return 2
    if opts is None:
        print(USAGE, end="")
        return 0
    kind, target = program
    if kind == "script" and not os.path.exists(target):
        print("python -m obmem run: %s: no such file" % target, file=sys.stderr)
        return 2
    try:
        # stacks end at the program's own frames: runpy's and this runner's are left out
        path = obmem._capture_start(opts["out"], native=opts["native"], sample=opts["sample"],
                                    max_frames=opts["max_frames"],
                                    stop_at=(runpy._run_code.__code__, run_target.__code__))
    except (OSError, RuntimeError, ValueError) as e:
        print("python -m obmem run: cannot write the capture %s: %s" % (opts["out"], e),
              file=sys.stderr)
        return 2
    status = 0
    pid = os.getpid()
    try:
        run_target(kind, target, args)
    except SystemExit as e:
        status = exit_status(e)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        obmem._capture_stop()
        sys.stdout.flush()
    if os.getpid() != pid:  # a forked child that came back here: its own capture, or none
        if "%p" not in opts["out"]:
            return status
        path = opts["out"].replace("%p", str(os.getpid()))
    print("obmem run: capture written to %s (obmem report %s)" % (path, path), file=sys.stderr)
    if opts["max_peak"] is not None or opts["max_leak"] is not None:
        try:
            summary = obmem._capture_summary(path)
        except ValueError as e:
            print("python -m obmem run: %s" % e, file=sys.stderr)
            return 2
        over = False
        if opts["max_peak"] is not None and summary["peak_bytes"] > opts["max_peak"]:
            print("obmem run: peak %.0f bytes exceeds --max-peak %d"
                  % (summary["peak_bytes"], opts["max_peak"]), file=sys.stderr)
            over = True
        if opts["max_leak"] is not None and summary["leak_bytes"] > opts["max_leak"]:
            print("obmem run: %.0f bytes leaked exceeds --max-leak %d"
                  % (summary["leak_bytes"], opts["max_leak"]), file=sys.stderr)
            over = True
        if over:
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
