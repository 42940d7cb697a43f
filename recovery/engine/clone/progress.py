"""Rates, ETAs and which stage is the bottleneck, sampled every half second.

A clone is one pipeline across two machines: the sender reads, compresses
and sends; the receiver receives, decompresses and writes. Each side
measures the share of time its own stages are busy and tells the other
(``progress`` messages), so both name the same limit (:func:`limit`). The
limit is found the way back-pressure runs, from the end: a busy target disk
or receiving processor holds everything before it; else a sender blocked in
``send`` means the link carries all it can; else a busy sending processor,
else the source disk. A disk stage that is busy but spends most of that time
on a processor or waiting for one (a cgroup's CPU limit, other programs, a
source in the page cache) is the processors of its machine, not the disk
(:class:`CpuShare`); and a machine whose threads keep waiting for a processor
(:class:`ProcessorWait`) has its processors named wherever the time shows. The
receiver's own time in ``recv`` is mostly waiting for the sender, so it
names the link only when the sender's shares are not known (an older peer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from recovery.engine.clone.pipeline import Meter

REPORT_EVERY = 0.5  # seconds between progress reports, on both sides

# The stages in the order data flows: source disk, sending processor, link,
# receiving processor, target disk.
STAGES = ("read", "compress", "link", "decompress", "write")
BOTTLENECK_MIN = 0.6  # a stage busier than this can be the limit
CPU_BOUND = 0.5  # a disk stage that spends more of its busy time on (or waiting for) a processor is not the disk
PROCESSORS = {"read": "compress", "write": "decompress"}  # a disk stage -> its machine's processors


class RateMeter:
    """Smoothed bytes per second and the time left, from the work measured since it started: ``done`` is
    what was done before (a resumed clone's part on the target), which no rate counts."""

    def __init__(self, total: int, smoothing: float = 0.3, *, done: int = 0) -> None:
        self.total = total
        self.smoothing = smoothing
        self.start = time.monotonic()
        self._last_t = self.start
        self._first_done = self._last_done = done
        self.rate = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        dt = now - self._last_t
        if dt <= 0:
            return
        instant = (done - self._last_done) / dt
        self.rate = instant if self.rate == 0 else (self.smoothing * instant + (1 - self.smoothing) * self.rate)
        self._last_t, self._last_done = now, done

    def eta(self, done: int) -> float | None:
        if self.rate <= 0:
            return None
        return max(0.0, (self.total - done) / self.rate)

    def average(self, done: int) -> float:
        elapsed = time.monotonic() - self.start
        return (done - self._first_done) / elapsed if elapsed > 0 else 0.0


class StageSampler:
    """Turns cumulative busy-seconds counters into shares of the last window."""

    def __init__(self, counters: dict[str, Callable[[], float]], threads: dict[str, int]) -> None:
        self.counters = counters
        self.threads = threads
        self._t = time.monotonic()
        self._prev = {k: f() for k, f in counters.items()}

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        dt = max(now - self._t, 1e-6)
        out = {}
        for name, f in self.counters.items():
            value = f()
            share = (value - self._prev[name]) / dt / self.threads.get(name, 1)
            out[name] = round(min(max(share, 0.0), 1.0), 3)
            self._prev[name] = value
        self._t = now
        return out


class ProcessorWait:
    """How many of this program's threads, on average over the last window, were ready to run but waited
    for a processor (run-queue time from ``/proc/self/task/*/schedstat``: other programs, a cgroup's CPU
    limit), at most 1: processors this short are the limit wherever the time goes."""

    def __init__(self, tasks: str = "/proc/self/task", clock: Callable[[], float] = time.monotonic) -> None:
        self.tasks, self.clock = tasks, clock
        self._t = clock()
        self._prev = self._read()

    def _read(self) -> dict[str, int]:
        delays = {}
        try:
            names = os.listdir(self.tasks)
        except OSError:
            return {}
        for tid in names:
            try:
                with open(f"{self.tasks}/{tid}/schedstat", "rb") as f:
                    delays[tid] = int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the thread ended meanwhile
        return delays

    def sample(self) -> float:
        now, delays = self.clock(), self._read()
        waited = sum(ns - self._prev.get(tid, 0) for tid, ns in delays.items()) / 1e9
        window, self._t, self._prev = max(now - self._t, 1e-6), now, delays
        return round(min(max(waited / window, 0.0), 1.0), 3)


class CpuShare:
    """Of a stage's busy time in the last window, the share spent on a processor or waiting for one."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._prev = meter.spent()

    def sample(self) -> float:
        wall, cpu = self.meter.spent()
        busy, used = wall - self._prev[0], cpu - self._prev[1]
        self._prev = (wall, cpu)
        return round(min(max(used / busy, 0.0), 1.0), 3) if busy > 0 else 0.0


def limit(shares: dict[str, float], cpu: dict[str, float] | None = None, *, link_known: bool = True) -> str:
    """The stage that sets the pace now, by back-pressure (``""``: none is busy enough).

    ``shares`` holds what is known of :data:`STAGES`. ``cpu`` what is known of
    the processors: for the disk stages (``read``, ``write``) the share of
    their busy time on a processor or waiting for one (over :data:`CPU_BOUND`,
    their machine's processors are named instead of the disk), and for each
    machine (``sender``, ``receiver``) its :class:`ProcessorWait`, which counts
    as its processors being busy (``compress``, ``decompress``); a sender that
    short of processors is named before the link, whose time in ``send`` is
    then the processors' too. ``link_known`` False when ``link`` is only the
    receiver's waiting time (the sender's is unknown).
    """
    cpu = cpu or {}
    waits = {"decompress": cpu.get("receiver", 0.0), "compress": cpu.get("sender", 0.0)}
    for stage in ("write", "decompress", "link", "compress", "read"):
        if stage == "link" and waits["compress"] >= BOTTLENECK_MIN:
            return "compress"
        if stage == "link" and not link_known:
            continue
        if max(shares.get(stage, 0.0), waits.get(stage, 0.0)) >= BOTTLENECK_MIN:
            return PROCESSORS.get(stage, stage) if cpu.get(stage, 0.0) > CPU_BOUND else stage
    if not link_known and shares.get("link", 0.0) >= BOTTLENECK_MIN:
        return "link"
    return ""


class CpuSampler:
    """Share of this machine's CPU time that was idle since the last sample."""

    def __init__(self, stat_path: str = "/proc/stat") -> None:
        self.stat_path = stat_path
        self._prev = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            with open(self.stat_path) as f:
                fields = f.readline().split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields[:8]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return idle, sum(values)

    def idle(self) -> float:
        now = self._read()
        prev, self._prev = self._prev, now
        if now is None or prev is None or now[1] <= prev[1]:
            return 1.0  # unknown: do not hold compression back
        return (now[0] - prev[0]) / (now[1] - prev[1])
