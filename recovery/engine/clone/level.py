"""Choosing the zstd level: fixed, or ``auto`` (adapts to link and CPU).

``auto`` starts raw and climbs a ladder of levels while the link is the
bottleneck and there is CPU to spare: the sending thread is nearly always
inside send, the receiver nearly always waiting for bytes, and this
machine's CPUs are partly idle, so compression can buy a better ratio for
free. (On one machine, loopback TCP costs CPU just like compression does, so
a busy "link" with no idle CPU is not a reason to compress.) It steps down while
the receiver cannot keep up (its decompressing or writing threads are
saturated: compression only costs it CPU) or compression is the bottleneck
(the sending thread waits for chunks while the compressing threads are
saturated), down to sending raw. Whatever the level, a chunk that does not
shrink is sent raw.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.errors import UsageError

RAW = 0  # no compression
LADDER = (RAW, 1, 3, 6, 9)
MIN_SAVING = 1 / 32  # a chunk must shrink by this share to travel compressed
LINK_SATURATED = 0.85  # sender inside send this share of the time
RECEIVER_WAITING = 0.6  # and the receiver inside recv
RECEIVER_SATURATED = 0.8
CPU_SPARE = 0.25  # share of this machine's CPU time that must be idle to climb
STARVED = 0.25
WORKERS_SATURATED = 0.75


def parse_level(text: str) -> int | None:
    """``auto`` -> None; ``0`` (raw) .. ``19`` -> that level."""
    if text == "auto":
        return None
    try:
        level = int(text)
    except ValueError:
        raise UsageError(f"bad compression level {text!r}: use auto or 0..19") from None
    if not 0 <= level <= 19:
        raise UsageError(f"compression level {level} outside 0..19 (0 sends raw)")
    return level


def level_name(level: int) -> str:
    return "raw" if level == RAW else str(level)


@dataclass
class Sample:
    """Busy shares of the stages over the last window (0..1 each)."""

    link: float  # the sending thread inside send calls
    starved: float  # the sending thread waiting for compressed chunks
    workers: float  # hashing/compressing threads, averaged
    remote_link: float = 0.0  # the receiver's receiving thread inside recv
    remote_work: float = 0.0  # the receiver's decompressing/verifying threads
    remote_write: float = 0.0  # the receiver's writing thread
    cpu_idle: float = 1.0  # this machine's idle CPU share


class LevelController:
    def __init__(self, fixed: int | None) -> None:
        self.fixed = fixed
        self.index = 0  # start raw: compression has to earn its place
        self._cooldown = 0

    @property
    def level(self) -> int:
        return self.fixed if self.fixed is not None else LADDER[self.index]

    def update(self, s: Sample) -> None:
        """Feed one window's sample; may move one step on the ladder."""
        if self.fixed is not None:
            return
        if self._cooldown:
            self._cooldown -= 1
            return
        receiver_busy = max(s.remote_work, s.remote_write) >= RECEIVER_SATURATED
        link_bound = (
            s.link >= LINK_SATURATED
            and s.remote_link >= RECEIVER_WAITING
            and not receiver_busy
            and s.cpu_idle >= CPU_SPARE
        )
        compress_bound = s.starved >= STARVED and s.workers >= WORKERS_SATURATED
        if link_bound and self.index < len(LADDER) - 1:
            self.index += 1
            self._cooldown = 1
        elif (receiver_busy or compress_bound) and self.index > 0:
            self.index -= 1
            self._cooldown = 1
