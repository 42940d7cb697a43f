"""A channel held to a chosen rate, as a slow cable would: for the demo, which runs on one machine.

Both directions are paced; the time spent waiting to send counts as time
in ``send`` (the link is busy), so the bottleneck display says the link is
the limit, as it would on a real slow link.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from recovery.link.base import Buffer, Channel, Connection


class _OnInner:
    """An attribute that lives on the wrapped channel (read and written there)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: PacedChannel | None, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.inner, self.name)

    def __set__(self, obj: PacedChannel, value: Any) -> None:
        setattr(obj.inner, self.name, value)


class PacedChannel(Channel):
    """``inner``, no faster than ``rate`` bytes per second each way."""

    def __init__(self, inner: Channel, rate: float) -> None:  # no super().__init__: the counters are inner's
        self.inner, self.rate = inner, rate
        self.name = inner.name
        self._free = {"in": 0.0, "out": 0.0}  # when each direction may move its next byte
        self._lock = threading.Lock()

    def _pace(self, way: str, n: int) -> float:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free[way])
            self._free[way] = start + n / self.rate
            wait = self._free[way] - now
        if wait > 0:
            time.sleep(wait)
        return max(0.0, wait)

    def recv_into(self, view: memoryview) -> int:
        n = self.inner.recv_into(view)
        self._pace("in", n)
        return n

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        waited = self._pace("out", sum(memoryview(p).nbytes for p in parts))
        self.inner.send_parts(parts)
        self.inner.send_seconds += waited

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        self.inner.close()

    def gone(self) -> str | None:
        return self.inner.gone()

    # the engine's counters live on the real channel
    last_activity = _OnInner()
    bytes_in = _OnInner()
    bytes_out = _OnInner()
    send_seconds = _OnInner()


def pace(conn: Connection, rate: float) -> None:
    """Hold ``conn``'s data channel to ``rate`` bytes per second (before the data starts)."""
    conn.data = PacedChannel(conn.data, rate)
