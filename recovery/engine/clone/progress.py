"""Rates, ETAs and which stage is the bottleneck, sampled every half second.

A clone is one pipeline across two machines: the sender reads, compresses
and sends; the receiver receives, decompresses and writes. Each side
measures the share of time its own stages are busy and tells the other
(``progress`` messages), so both name the same limit (:func:`limit`). The
limit is found the way back-pressure runs, from the end: a busy target disk
or receiving processor holds everything before it; else a sender blocked in
``send`` means the link carries all it can; else a busy sending processor,
else the source disk. The receiver's own time in ``recv`` is mostly waiting
for the sender, so it names the link only when the sender's shares are not
known (an older peer).
"""

from __future__ import annotations

import time
from collections.abc import Callable

REPORT_EVERY = 0.5  # seconds between progress reports, on both sides

# The stages in the order data flows: source disk, sending processor, link,
# receiving processor, target disk.
STAGES = ("read", "compress", "link", "decompress", "write")
BOTTLENECK_MIN = 0.6  # a stage busier than this can be the limit


class RateMeter:
    """Smoothed bytes per second and the time left."""

    def __init__(self, total: int, smoothing: float = 0.3) -> None:
        self.total = total
        self.smoothing = smoothing
        self.start = time.monotonic()
        self._last_t = self.start
        self._last_done = 0
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
        return done / elapsed if elapsed > 0 else 0.0


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


def limit(shares: dict[str, float], *, link_known: bool = True) -> str:
    """The stage that sets the pace now, by back-pressure (``""``: none is busy enough).

    ``shares`` holds what is known of :data:`STAGES`; ``link_known`` False
    when ``link`` is only the receiver's waiting time (the sender's is unknown).
    """
    for stage in ("write", "decompress", "link", "compress", "read"):
        if stage == "link" and not link_known:
            continue
        if shares.get(stage, 0.0) >= BOTTLENECK_MIN:
            return stage
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
