"""A byte channel over one open stream device, with a reader that never sleeps.

On 7.2 the driver tells a side that its peer closed only through ``read()``
returning 0 (once: the CLOSE frame is consumed, later reads give EAGAIN),
never through ``poll()`` or a failing ``write()``: a side that only writes
can block for ever once the peer is gone. So every :class:`StreamChannel`
has a watcher thread that reads whenever nobody else does. What it reads
before the engine asks is kept (bounded) and handed out first; a 0 is
latched as the peer's close; POLLHUP|POLLERR or ENXIO (the peer detached,
the cable pulled) closes the device at once, fails every call with
:class:`LinkError` and runs the ``on_lost`` callbacks, which is where a
later "wait for the peer to attach again" hooks in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from recovery.errors import LinkError
from recovery.link.base import NonBlockingChannel, link_gone
from recovery.link.tbstream.device import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, Device

SLICE_MS = 200  # longest wait inside the device before looking at the channel's state again
BACKOFF = 0.1  # seconds the watcher leaves the device alone while the engine reads it
PENDING_CAP = 16 << 20  # the watcher stops reading ahead of the engine beyond this
CLOSE_GRACE = 2.0  # seconds close() waits for the engine's calls to leave the device


class StreamChannel(NonBlockingChannel):
    def __init__(self, device: Device, name: str, *, on_lost: Sequence[Callable[[str], None]] = ()) -> None:
        super().__init__()
        self.device = device
        self.name = name
        self.on_lost = list(on_lost)
        self._rlock = threading.Lock()
        self._pending = bytearray()
        self._eof = False  # the peer's CLOSE was read
        self._lost: str | None = None
        self._aborted = threading.Event()
        self._closed = False
        self._device_closed = False
        self._state = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name=f"tbstream-{name}-reader", daemon=True)
        self._watcher.start()

    # --- state ---

    def gone(self) -> str | None:
        if self._lost:
            return self._lost
        if self._eof:
            return f"the peer closed the {self.name} stream"
        return None

    def _check(self) -> None:
        if self._lost:
            raise LinkError(self._lost)
        if self._aborted.is_set():
            raise LinkError(f"the {self.name} channel was closed")

    def _lose(self, why: str) -> None:
        """The peer is detached: fail everything, close the device at once, tell the callbacks (once)."""
        with self._state:
            if self._lost:
                return
            self._lost = reason = f"link lost on the {self.name} stream: {why}"
        self._aborted.set()
        for callback in list(self.on_lost):
            callback(reason)
        # The caller may hold a lock of this channel: close from a thread of its own.
        threading.Thread(target=self._close_device, name=f"tbstream-{self.name}-close", daemon=True).start()

    # --- reading ---

    def recv_into(self, view: memoryview) -> int:
        if not len(view):
            return 0
        with self._rlock:
            while True:
                if self._pending:
                    n = min(len(view), len(self._pending))
                    view[:n] = self._pending[:n]
                    del self._pending[:n]
                    return self._got(n)
                if self._eof:
                    return 0
                self._check()
                got = self._read(view)
                if got is None:
                    self._wait(POLLIN)
                    continue
                return self._got(got)

    def _got(self, n: int) -> int:
        if n:
            self.last_activity = time.monotonic()
            self.bytes_in += n
        return n

    def _read(self, view: memoryview) -> int | None:
        """One non-blocking read (the read lock held): bytes, 0 at the peer's close, None if none yet."""
        try:
            n = self.device.readinto(view)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            if link_gone(e):
                raise self._link_lost(e) from None
            raise
        if n == 0:
            self._eof = True
        return n

    def _wait(self, events: int) -> None:
        """Until the device may be ready (POLLHUP|POLLERR too: the next call then fails with ENXIO)."""
        revents = self.device.poll(events, SLICE_MS)
        if revents & POLLNVAL:
            self._check()
            raise LinkError(f"the {self.name} stream is closed")

    # --- writing ---

    def _writev(self, views: list[memoryview]) -> int:
        return self.device.writev(views)

    def _wait_writable(self) -> None:
        self._wait(POLLOUT)

    def _check_send(self) -> None:
        self._check()
        if self._eof:  # the driver would accept the bytes and drop them
            raise LinkError(f"the peer closed the {self.name} stream")

    def _link_lost(self, e: OSError) -> LinkError:
        """The peer is detached: see :meth:`_lose`."""
        self._lose(e.strerror or "the device failed")
        return LinkError(self._lost or "link lost")

    # --- the watcher ---

    def _watch(self) -> None:
        scratch = memoryview(bytearray(1 << 16))
        while not self._closed and not self._lost:
            try:
                revents = self.device.poll(POLLIN, SLICE_MS)
            except OSError:
                return
            if self._closed or self._lost or revents & POLLNVAL:
                return
            if self._eof or len(self._pending) >= PENDING_CAP:
                self._aborted.wait(BACKOFF)  # nothing to learn until the engine reads or closes
                continue
            if not revents & (POLLIN | POLLHUP | POLLERR):
                continue  # a read tells a detached device (ENXIO) from a closed peer (0)
            if not self._rlock.acquire(blocking=False):
                self._aborted.wait(BACKOFF)  # the engine is reading: it sees what the watcher would
                continue
            try:
                if self._closed or self._lost:
                    return
                n = self._read(scratch)
                if n:
                    self._pending += scratch[:n]
            except LinkError:
                return
            finally:
                self._rlock.release()

    # --- ending ---

    def abort(self) -> None:
        self._aborted.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._aborted.set()
        self._close_device()

    def _close_device(self) -> None:
        """Close the device once no call is inside it (they wake within a slice after the abort)."""
        got_r = self._rlock.acquire(timeout=CLOSE_GRACE)
        got_w = self._wlock.acquire(timeout=CLOSE_GRACE)
        try:
            if self._device_closed:
                return
            if not (got_r and got_w):
                return  # a call is stuck inside the device: leave the descriptor to the process exit
            self._device_closed = True
            try:
                self.device.close()
            except OSError:
                pass
        finally:
            if got_w:
                self._wlock.release()
            if got_r:
                self._rlock.release()
