"""``/dev/tbstreamN`` as the link uses it: always non-blocking, through one small interface.

:class:`Device` is every call the link makes on an open stream device (read,
write, poll, close); :class:`FdDevice` makes them on a real file descriptor.
The emulated kernel of the tests hands out its own :class:`Device` with the
driver's ring semantics, so this interface is the one seam between the link
and the character device.

What the 7.2 driver does with these calls (``drivers/thunderbolt/stream.c``,
docs/links.md has the whole list): ``read`` gives EAGAIN while the receive
ring is empty and 0 exactly once when the peer's CLOSE frame is consumed
(EAGAIN again after that); ``write`` queues what fits in the transmit ring
and returns a short count, or EAGAIN when the ring is full on entry; both
fail with ENXIO once the peer is detached, and ``poll`` then reports
POLLHUP|POLLERR. ``poll`` never reports the peer's close by itself.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from recovery.link.base import IOV_MAX

POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
POLLHUP, POLLERR, POLLNVAL = select.POLLHUP, select.POLLERR, select.POLLNVAL
FRAME = 4096  # one ring slot carries at most this many bytes


class Device(Protocol):
    """An open stream device. Calls raise :class:`BlockingIOError` instead of waiting."""

    name: str  # for messages, e.g. "/dev/tbstream3"

    def readinto(self, view: memoryview) -> int: ...
    def writev(self, views: Sequence[memoryview]) -> int: ...
    def poll(self, events: int, timeout_ms: int) -> int:
        """The ready events (possibly none after ``timeout_ms``), POLLHUP|POLLERR once detached."""
        ...

    def close(self) -> None: ...


class FdDevice:
    """A real ``/dev/tbstreamN`` (or any descriptor that behaves alike)."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        os.set_blocking(fd, False)

    @classmethod
    def open(cls, path: Path) -> FdDevice:
        """Open without ever sleeping in the driver: ENXIO (no peer attached) and EINVAL come at once."""
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        return cls(fd, str(path))

    def readinto(self, view: memoryview) -> int:
        return os.readv(self.fd, [view])

    def writev(self, views: Sequence[memoryview]) -> int:
        return os.writev(self.fd, views[:IOV_MAX])

    def poll(self, events: int, timeout_ms: int) -> int:
        poller = select.poll()  # one per call: the watcher and the engine poll from their own threads
        poller.register(self.fd, events)
        ready = poller.poll(timeout_ms)
        return ready[0][1] if ready else 0

    def close(self) -> None:
        os.close(self.fd)
