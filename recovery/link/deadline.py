"""When a link opener gives up: at a point in time, or when told to stop.

Openers wait for the other machine in short steps (retrying an open, a
handshake record, a beacon query).  Each step asks its :class:`Deadline`
how long it may wait, and waits on the stop switch rather than sleeping, so
a caller in another thread (the wizard quitting) ends the wait at once; the
opener then cleans up what it made on its usual exit path.
"""

from __future__ import annotations

import threading
import time

from recovery.errors import CancelledError


class Deadline:
    def __init__(self, timeout: float | None, stop: threading.Event | None = None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout
        self.stop = stop or threading.Event()

    @property
    def endless(self) -> bool:
        return self.at is None

    def expired(self) -> bool:
        """The time is up (a stop is reported by :meth:`check`, not here)."""
        return self.at is not None and time.monotonic() >= self.at

    def left(self, cap: float) -> float:
        """Seconds to wait now: at most ``cap``, never past the deadline."""
        if self.at is None:
            return cap
        return max(0.0, min(cap, self.at - time.monotonic()))

    def check(self) -> None:
        """Raise :class:`CancelledError` once the stop switch is set."""
        if self.stop.is_set():
            raise CancelledError("stopped while waiting for the other machine")

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (less at the deadline); return early and raise if stopped."""
        self.stop.wait(self.left(seconds))
        self.check()
