"""The control channel at run time: a reader thread, pings, and liveness.

Wraps the pure :class:`~recovery.protocol.state.ControlConnection` with the
I/O: one thread reads and decodes the peer's messages into an inbox, another
pings every :data:`PING_INTERVAL` seconds so that a silent peer is noticed.
The peer counts as gone when nothing arrived on either channel for
``timeout`` seconds.
"""

from __future__ import annotations

import queue
import threading
import time

from recovery.errors import (
    CancelledError,
    Interrupted,
    LinkError,
    RecoveryError,
    RemoteProtocolError,
    error_from_code,
)
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.state import ControlConnection, State

PING_INTERVAL = 2.0
DEFAULT_TIMEOUT = 30.0


class ControlLink:
    def __init__(self, conn: Connection, timeout: float = DEFAULT_TIMEOUT,
                 cancel: threading.Event | None = None) -> None:
        self.conn = conn
        self.cancel = cancel or threading.Event()  # set by the user: stop, and tell the peer
        self.channel = conn.control
        self.timeout = timeout
        self.state = ControlConnection()
        self.inbox: queue.Queue[m.Message | BaseException] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---

    def start(self, hello: m.Hello) -> m.Hello:
        """Send our preamble and hello, start the threads, return the peer's hello."""
        with self._lock:
            data = self.state.preamble() + self.state.send(hello)
        self.channel.send(data)
        for target, name in ((self._read_loop, "control-read"), (self._ping_loop, "control-ping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        peer = self.expect(m.Hello)
        assert isinstance(peer, m.Hello)
        return peer

    def close(self) -> None:
        self._closed.set()

    # --- sending ---

    def send(self, msg: m.Message) -> None:
        with self._lock:
            data = self.state.send(msg)
            self.channel.send(data)

    def try_send(self, msg: m.Message) -> None:
        """Best effort (used while failing): never raises."""
        try:
            self.send(msg)
        except (RecoveryError, OSError):
            pass

    def report(self, error: BaseException) -> None:
        """Tell the peer why this side stops."""
        if isinstance(error, KeyboardInterrupt):
            self.try_send(m.Cancel(reason="interrupted by the user"))
        elif isinstance(error, CancelledError):
            self.try_send(m.Cancel(reason=error.message[:1000]))
        elif isinstance(error, RecoveryError):
            if not error.message.startswith("peer:") and not isinstance(error, LinkError):
                self.try_send(m.Error(code=error.code, message=error.message[:1000]))
        else:
            self.try_send(m.Error(code="internal", message=f"internal error: {error}"[:1000]))

    # --- receiving ---

    def _read_loop(self) -> None:
        try:
            while not self._closed.is_set():
                data = self.channel.recv_some(65536)
                if not data:
                    raise LinkError("link lost: the peer closed the connection")
                with self._lock:
                    self.state.receive_data(data)
                    while (msg := self.state.next_message()) is not None:
                        if not isinstance(msg, m.Ping):
                            self.inbox.put(msg)
        except BaseException as e:  # noqa: BLE001 - delivered to the session thread
            if not self._closed.is_set():
                self.inbox.put(e)

    def _ping_loop(self) -> None:
        while not self._closed.wait(PING_INTERVAL):
            with self._lock:
                if self.state.state in (State.HANDSHAKE, State.CLOSED, State.BROKEN):
                    continue
            try:
                self.send(m.Ping())
            except (RecoveryError, OSError):
                return

    def poll(self, timeout: float) -> m.Message | None:
        """The next message within ``timeout`` seconds, or None.

        Raises the peer's error or cancel as this side's error,
        :class:`Interrupted` when this side's user cancelled, and
        :class:`LinkError` when the peer has been silent too long.
        """
        if self.cancel.is_set():
            raise Interrupted("interrupted by the user")
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            silent = time.monotonic() - self.conn.last_activity()
            if silent > self.timeout:
                raise LinkError(f"link lost: nothing heard from the peer for {silent:.0f} s") from None
            return None
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, m.Error):
            raise error_from_code(item.code, item.message)
        if isinstance(item, m.Cancel):
            raise CancelledError(f"the peer cancelled: {item.reason}")
        return item

    def explain(self, error: BaseException, wait: float = 1.0) -> BaseException:
        """The peer's own reason, when a lost link is only the echo of it.

        A peer that cancels or fails tells us and then closes; our data
        thread may see the close first. Give its message a moment to arrive.
        """
        if not isinstance(error, LinkError):
            return error
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(item, m.Error):
                return error_from_code(item.code, item.message)
            if isinstance(item, m.Cancel):
                return CancelledError(f"the peer cancelled: {item.reason}")
            if isinstance(item, BaseException):
                break
        return error

    def expect(self, *types: type[m.Message], tolerate: tuple[type[m.Message], ...] = (m.Progress,)) -> m.Message:
        """Wait for one of ``types`` (skipping ``tolerate``d messages)."""
        while True:
            msg = self.poll(0.5)
            if msg is None:
                continue
            if isinstance(msg, types):
                return msg
            if isinstance(msg, tolerate):
                continue
            raise RemoteProtocolError(f"unexpected {msg.type!r} message from the peer")
