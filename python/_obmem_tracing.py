"""_obmem_tracing.py — obmem's tracemalloc-compatible surface, over the C core's raw data.

The C module obmem (python/trace.c) records the traces; at import it calls bind(module), which
adds to it what tracemalloc has in Python: take_snapshot(), get_object_traceback(), and the
classes.  Frame, Traceback, Statistic, StatisticDiff, Trace, Filter and DomainFilter are
tracemalloc's own classes (the standard library's, not copies), so results compare and
pickle as tracemalloc's do; Snapshot is tracemalloc.Snapshot with the function name of each
frame kept beside it (tracemalloc's frames are (filename, lineno) only).  What tracemalloc
lacks: get_peak_snapshot() and get_timeline().  docs/python.md describes all of it.
"""
import collections
import tracemalloc as _tracemalloc
from tracemalloc import (DomainFilter, Filter, Frame, Statistic, StatisticDiff, Trace,  # noqa: F401
                         Traceback)

Sample = collections.namedtuple("Sample", "time traced_bytes obmem_bytes rss_bytes")
Sample.__doc__ = """One timeline sample: seconds since start(), bytes of the traced blocks, bytes
obmem has handed out (all domains, untraced RAW included), resident set size."""
GCEvent = collections.namedtuple("GCEvent", "time generation collected uncollectable duration")
GCEvent.__doc__ = """One collection (gc.callbacks): its start in seconds since start(), the
generation, objects collected and uncollectable, its duration in seconds."""


class Timeline(collections.namedtuple("Timeline", "interval_ms samples gc_events")):
    """get_timeline(): samples every interval_ms (taken on allocations) and GC events."""
    __slots__ = ()

    @property
    def gc_time(self):
        """Seconds spent in collections."""
        return sum(e.duration for e in self.gc_events)

    @property
    def longest_gc_pause(self):
        """The longest collection, in seconds (0.0 when there was none)."""
        return max((e.duration for e in self.gc_events), default=0.0)


class Snapshot(_tracemalloc.Snapshot):
    """tracemalloc.Snapshot, plus function_names: {(filename, lineno): function name}."""

    def __init__(self, traces, traceback_limit, function_names=None):
        super().__init__(traces, traceback_limit)
        self.function_names = function_names if function_names is not None else {}

    def function_name(self, frame):
        """The name of the function of a Frame (None when unknown)."""
        return self.function_names.get((frame.filename, frame.lineno))

    def filter_traces(self, filters):
        filtered = super().filter_traces(filters)
        return Snapshot(filtered.traces._traces, self.traceback_limit, self.function_names)


def bind(core):
    """Adds the Python part of the tracing surface to the C module `core` (obmem)."""

    def take_snapshot():
        """A Snapshot of the traces of the blocks live now."""
        if not core.is_tracing():
            raise RuntimeError("obmem must be tracing memory allocations to take a snapshot "
                               "(obmem.start())")
        traces, names = core._raw_snapshot(False)
        return Snapshot(traces, core.get_traceback_limit(), names)

    def get_peak_snapshot():
        """A Snapshot of the stacks live at the peak of get_traced_memory() (since start() or
        reset_peak()): per stack its blocks and bytes then, each block given the stack's
        average size.  Recorded when the peak grew by 1 % or 64 KiB, so its total is within
        that of the true peak (exact when taken at the peak)."""
        if not core.is_tracing():
            raise RuntimeError("obmem must be tracing memory allocations to take a snapshot "
                               "(obmem.start())")
        traces, names = core._raw_snapshot(True)
        return Snapshot(traces, core.get_traceback_limit(), names)

    def get_object_traceback(obj):
        """The Traceback where obj was allocated, or None (not traced, or not tracing)."""
        raw = core._raw_object_traceback(obj)
        return None if raw is None else Traceback(raw[0])

    def get_timeline():
        """Timeline(interval_ms, samples, gc_events) since start()."""
        interval_ms, samples, events = core._raw_timeline()
        return Timeline(interval_ms, [Sample(*s) for s in samples],
                        [GCEvent(*e) for e in events])

    for value in (take_snapshot, get_peak_snapshot, get_object_traceback, get_timeline):
        value.__module__ = core.__name__
        setattr(core, value.__name__, value)
    for name in ("Snapshot", "Timeline", "Sample", "GCEvent", "Frame", "Traceback", "Statistic",
                 "StatisticDiff", "Trace", "Filter", "DomainFilter"):
        setattr(core, name, globals()[name])
