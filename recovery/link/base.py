"""Byte channels and connections: what every link hands to the engine.

A :class:`Connection` is a control channel plus a data channel, each a plain
bidirectional byte stream. The engine never knows which link it runs on.

:class:`FdChannel` moves bytes over any file descriptor (socket, pipe,
``/dev/tbstreamN``) with non-blocking I/O and ``poll``: reads and writes may
be short and are retried, a blocked call wakes up twice a second to notice
:meth:`Channel.abort`, and every way a link can die (EOF mid-message, reset,
ENXIO from a pulled cable, POLLHUP/POLLERR) becomes :class:`LinkError`. Its
writing, and which errors mean a lost link, are :class:`NonBlockingChannel`'s,
shared with the USB4STREAM channel.
"""

from __future__ import annotations

import abc
import collections
import errno
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recovery.errors import LinkError

Buffer = bytes | bytearray | memoryview

POLL_SLICE_MS = 500
IOV_MAX = 64  # buffers per writev: plenty for a chunk's header and payload
ACK_POLL = 0.1  # seconds between looks at the channels while waiting for the peer's acknowledgement
# errno values that mean "the peer or the cable is gone" (EBADF: the channel was closed under a call).
LINK_ERRNOS = {
    errno.ECONNRESET,
    errno.EPIPE,
    errno.ENXIO,
    errno.ENOTCONN,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ESHUTDOWN,
    errno.EIO,
    errno.ENODEV,
    errno.EBADF,
}


def link_gone(e: OSError) -> bool:
    """Does this failed call mean the peer or the cable is gone (a :class:`LinkError`), not a fault here?"""
    return e.errno in LINK_ERRNOS


def drop_written(views: list[memoryview], n: int) -> None:
    """Remove the first ``n`` bytes (a short write's count) from ``views``, in place."""
    while n:
        head = views[0]
        if n >= len(head):
            n -= len(head)
            views.pop(0)
        else:
            views[0] = head[n:]
            n = 0


class Channel(abc.ABC):
    """One bidirectional byte stream."""

    name: str = "channel"

    def __init__(self) -> None:
        self.last_activity = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.send_seconds = 0.0  # time spent inside send calls (link busy or blocked)

    @abc.abstractmethod
    def recv_into(self, view: memoryview) -> int:
        """Read up to ``len(view)`` bytes; 0 means the peer closed its end."""

    @abc.abstractmethod
    def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Write every byte of every part, in order."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Make blocked and future calls fail promptly (from any thread)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the channel; the peer sees end of stream."""

    def gone(self) -> str | None:
        """Why the peer can no longer be reached on this channel, if the link already knows."""
        return None

    def finish_sending(self) -> None:  # noqa: B027 - most channels have no half close: nothing to do
        """Say end-of-stream to the peer but keep reading (a socket's half close), so the last
        words reach it: closing with unread bytes would reset the connection and lose them."""

    def send(self, data: Buffer) -> None:
        self.send_parts((data,))

    def recv_exact(self, view: memoryview, what: str = "data") -> None:
        """Fill ``view`` completely or raise :class:`LinkError`."""
        got = 0
        n = len(view)
        while got < n:
            k = self.recv_into(view[got:])
            if k == 0:
                raise LinkError(f"the peer closed the {self.name} channel in the middle of {what} ({got} of {n} bytes)")
            got += k

    def recv_some(self, size: int = 65536) -> bytes:
        """Up to ``size`` bytes (b"" at end of stream)."""
        buf = bytearray(size)
        n = self.recv_into(memoryview(buf))
        return bytes(buf[:n])


class NonBlockingChannel(Channel):
    """A channel whose writes never wait inside the call: they may take part of the bytes, or none
    (BlockingIOError), and are tried again until all are taken; a failure that means the link is gone
    (:func:`link_gone`) becomes :class:`LinkError`. Subclasses make the calls and say what a lost
    link means to them."""

    def __init__(self) -> None:
        super().__init__()
        self._wlock = threading.Lock()

    @abc.abstractmethod
    def _writev(self, views: list[memoryview]) -> int:
        """One non-blocking write of the first of ``views``: how many bytes it took."""

    @abc.abstractmethod
    def _wait_writable(self) -> None:
        """Wait until a write may take bytes, or for a slice of time at most."""

    @abc.abstractmethod
    def _check_send(self) -> None:
        """Raise :class:`LinkError` if nothing more may be sent."""

    @abc.abstractmethod
    def _link_lost(self, e: OSError) -> LinkError:
        """The error to raise for a call that failed because the link is gone."""

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        start = time.monotonic()
        with self._wlock:
            try:
                while views:
                    self._check_send()
                    try:
                        n = self._writev(views)
                    except BlockingIOError:
                        self._wait_writable()
                        continue
                    except InterruptedError:
                        continue
                    except OSError as e:
                        if link_gone(e):
                            raise self._link_lost(e) from None
                        raise
                    self.bytes_out += n
                    drop_written(views, n)
            finally:
                self.send_seconds += time.monotonic() - start


class FdChannel(NonBlockingChannel):
    """A channel over one file descriptor (or a read fd and a write fd)."""

    def __init__(
        self,
        read_fd: int,
        write_fd: int | None = None,
        *,
        name: str = "channel",
        owner: Any = None,
        close_fds: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.read_fd = read_fd
        self.write_fd = read_fd if write_fd is None else write_fd
        self._owner = owner  # keeps a socket object alive
        self._close_fds = close_fds
        self._aborted = threading.Event()
        self._closed = False
        for fd in {self.read_fd, self.write_fd}:
            os.set_blocking(fd, False)

    def _link_lost(self, e: OSError) -> LinkError:
        return LinkError(f"link lost on the {self.name} channel: {os.strerror(e.errno or 0)}")

    def _wait(self, fd: int, events: int) -> None:
        poller = select.poll()
        poller.register(fd, events)
        while True:
            if self._aborted.is_set():
                raise LinkError(f"the {self.name} channel was closed")
            ready = poller.poll(POLL_SLICE_MS)
            if ready:
                return  # errors show up in the following read or write

    def recv_into(self, view: memoryview) -> int:
        if not len(view):
            return 0
        while True:
            if self._aborted.is_set():
                raise LinkError(f"the {self.name} channel was closed")
            try:
                n = os.readv(self.read_fd, [view])
            except BlockingIOError:
                self._wait(self.read_fd, select.POLLIN | select.POLLPRI)
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if link_gone(e):
                    raise self._link_lost(e) from None
                raise
            if n:
                self.last_activity = time.monotonic()
                self.bytes_in += n
            return n

    def _writev(self, views: list[memoryview]) -> int:
        return os.writev(self.write_fd, views[:IOV_MAX])

    def _wait_writable(self) -> None:
        self._wait(self.write_fd, select.POLLOUT)

    def _check_send(self) -> None:
        if self._aborted.is_set():
            raise LinkError(f"the {self.name} channel was closed")

    def finish_sending(self) -> None:
        shutdown = getattr(self._owner, "shutdown", None)
        if shutdown is not None:
            try:
                shutdown(1)  # socket.SHUT_WR
            except OSError:
                pass

    def abort(self) -> None:
        self._aborted.set()
        shutdown = getattr(self._owner, "shutdown", None)
        if shutdown is not None:
            try:
                shutdown(2)  # socket.SHUT_RDWR: wakes a peer blocked on us, too
            except OSError:
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._aborted.set()
        if self._owner is not None and hasattr(self._owner, "close"):
            self._owner.close()
        elif self._close_fds:
            for fd in {self.read_fd, self.write_fd}:
                try:
                    os.close(fd)
                except OSError:
                    pass


@dataclass
class Connection:
    """A control channel and a data channel to one peer."""

    control: Channel
    data: Channel
    kind: str  # "tcp", "stdio", "tbstream", "tbnet"
    peer: str  # human description of the other end
    on_close: list[Any] = field(default_factory=list)  # callables run by close()
    speed_probe: Callable[[], str | None] | None = None  # see speed()
    binding: bytes = b""  # what both ends see alike of this link (a token, nonces): bound into the pairing
    private: bool = False  # no network reaches it (a direct cable, loopback): see PeerLink.encrypts
    origin: str = ""  # where the peer is, for counting its wrong codes (an address or IPv6 /64; "": the link)
    address: str = ""  # the peer's own address: what it did without pairing counts against it alone
    choice: str | None = None  # why this link was chosen (auto: the measured rates), for people
    rates: dict[str, float] | None = None  # bytes/s each candidate link measured at the start

    def speed(self) -> str | None:
        """The link's speed for people (a TCP link: its network card's), when it is known."""
        return self.speed_probe() if self.speed_probe is not None else None

    def last_activity(self) -> float:
        return max(self.control.last_activity, self.data.last_activity)

    def abort(self) -> None:
        self.control.abort()
        self.data.abort()

    def gone(self) -> str | None:
        """Why the peer is unreachable, if either channel already knows (see :meth:`Channel.gone`)."""
        return self.control.gone() or self.data.gone()

    def close_after_ack(self, acked: threading.Event, timeout: float) -> None:
        """Close once the engine has the peer's acknowledgement of the end (``acked`` set).

        USB4STREAM drops what is still queued when a device closes, without an
        error, so the last word must be the peer's acknowledgement. Raises
        :class:`LinkError` (after closing) if the peer vanishes or stays silent
        for ``timeout`` seconds instead.
        """
        deadline = time.monotonic() + timeout
        try:
            while not acked.wait(max(0.0, min(ACK_POLL, deadline - time.monotonic()))):
                reason = self.gone()
                if reason:
                    raise LinkError(f"{reason} before it acknowledged the end of the transfer")
                if time.monotonic() >= deadline:
                    raise LinkError(
                        f"link lost: the peer did not acknowledge the end of the transfer within {timeout:g} s"
                    )
        except LinkError:
            self.abort()
            self.close()
            raise
        self.close()

    def close(self) -> None:
        self.data.close()
        self.control.close()
        while self.on_close:
            self.on_close.pop()()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GivesBack:
    """Connections given back, for the next accept (a kept source serves one waiter after another)."""

    def __init__(self) -> None:
        self._returned: collections.deque[Connection] = collections.deque()
        self._returned_lock = threading.Lock()

    def give_back(self, conn: Connection) -> None:
        with self._returned_lock:
            self._returned.append(conn)

    def _take_returned(self) -> Connection | None:
        with self._returned_lock:
            return self._returned.popleft() if self._returned else None
