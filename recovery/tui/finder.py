"""Finding the peer: listen for it, connect to an address, or take a cable link.

Every method here blocks; the wizard runs each in a thread worker. Each
source of connections hands what it gets to :meth:`PeerFinder.offer`, which
does the handshake; the first peer wins, later ones are turned away. One
finder serves one search: once a peer is found the wizard stops it, and
starts a new one when that peer is gone.

Sources: a TCP listener (:meth:`listen`), a TCP address the user typed
(:meth:`connect`, retried until it answers), and any blocking opener
(:meth:`use`) such as a cable link, which is handed the finder's stop switch. A discovery monitor with ``fileno()``
and ``poll()`` (``recovery.link.discovery``) reports what it sees through
:meth:`watch`.
"""

from __future__ import annotations

import select as _select
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from recovery.engine.session import PeerLink, handshake
from recovery.errors import CancelledError, LinkError, MissingToolError, NoPeerError, RecoveryError
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.protocol.messages import DiskInfo

RETRY = 2.0  # seconds between attempts to reach an address
CONNECT_TIMEOUT = 5.0

Status = Callable[[str, str], None]  # (source, text)


class Monitor(Protocol):
    """What a discovery monitor offers (pyudev's shape): a pollable fd and events."""

    def fileno(self) -> int: ...
    def poll(self, timeout: float | None = ...) -> Any: ...


class PeerFinder:
    def __init__(
        self,
        *,
        disks: Callable[[], tuple[DiskInfo, ...]],
        found: Callable[[PeerLink], None],
        status: Status,
        hostname: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.disks = disks
        self.found = found
        self.status = status
        self.hostname = hostname
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._taken = False
        self._listeners: list[tcp.Listener] = []
        self._handshaking: list[Connection] = []
        self._target: tcp.Endpoint | None = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """End every source (from any thread); blocked calls return promptly."""
        self._stop.set()
        with self._lock:
            listeners = list(self._listeners)
            pending = list(self._handshaking)
        for conn in pending:
            conn.abort()  # a handshake in progress fails at once
        for listener in listeners:
            try:
                listener.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
            except OSError:
                pass

    def offer(self, conn: Connection) -> bool:
        """Handshake on a new connection; hand the peer over if it is the first."""
        with self._lock:
            if self._stop.is_set():
                conn.close()
                return False
            self._handshaking.append(conn)
        try:
            link = handshake(conn, "agent", disks=self.disks(), hostname=self.hostname, timeout=self.timeout)
        except RecoveryError as e:
            conn.close()
            if not self._stop.is_set():
                self.status("peer", f"a connection from {conn.peer} failed: {e.message}")
            return False
        finally:
            with self._lock:
                self._handshaking = [c for c in self._handshaking if c is not conn]
        if link.theirs.role != "agent":
            command = {"sender": "send", "receiver": "receive"}.get(link.theirs.role, link.theirs.role)
            self._turn_away(link, f"{link.theirs.host.hostname} runs `recovery {command}`; "
                                  "start `recovery tui` or `recovery agent` there instead")
            return False
        with self._lock:
            first = not self._taken and not self._stop.is_set()
            self._taken = True
        if not first:
            self._turn_away(link, None)
            return False
        self.found(link)
        return True

    def _turn_away(self, link: PeerLink, why: str | None) -> None:
        link.abandon(CancelledError(f"{link.ours.host.hostname} is busy with another peer"))
        link.close()
        link.conn.close()
        if why:
            self.status("peer", why)

    # --- sources ---

    def listen(self, ep: tcp.Endpoint) -> None:
        """Accept peers on ``ep`` until stopped or a peer is found."""
        while True:
            try:
                listener = tcp.Listener(ep)
                break
            except RecoveryError as e:  # the port is busy (maybe our last listener, still closing)
                self.status("tcp", f"cannot listen: {e.message}; trying again...")
                if self._stop.wait(RETRY):
                    return
        with self._lock:
            self._listeners.append(listener)
        self.status("tcp", f"listening on port {listener.port}")
        try:
            while not self._stop.is_set():
                try:
                    conn = listener.accept(None)
                except (LinkError, OSError):
                    if self._stop.wait(0.2):
                        break
                    continue
                if self.offer(conn):
                    break
        finally:
            listener.close()
            self.status("tcp", "not listening")

    def connect(self, ep: tcp.Endpoint) -> None:
        """Connect to ``ep``, trying again every few seconds until it answers or is replaced."""
        self._target = ep
        while not self._stop.is_set() and self._target == ep:
            self.status("connect", f"connecting to {ep}...")
            try:
                conn = tcp.connect(ep, timeout=CONNECT_TIMEOUT)
            except LinkError as e:
                self.status("connect", f"{e.message}; trying again...")
                if self._stop.wait(RETRY):
                    return
                continue
            if self.offer(conn):
                self.status("connect", f"connected to {ep}")
                return
            if self._stop.wait(RETRY):
                return

    def use(self, name: str, opener: Callable[[threading.Event], Connection]) -> None:
        """Take connections from a blocking opener (one attempt per call) until one is a peer.

        The opener gets the stop switch and must end its wait once it is set.
        """
        while not self._stop.is_set():
            try:
                conn = opener(self._stop)
            except CancelledError:
                return
            except (NoPeerError, MissingToolError) as e:
                self.status(name, e.message)  # says what is missing: a peer, a module
                if self._stop.wait(RETRY):
                    return
                continue
            except RecoveryError:  # the other side was not ready within one attempt
                self.status(name, "waiting for the other machine on the cable...")
                if self._stop.wait(0.5):
                    return
                continue
            if self.offer(conn):
                self.status(name, f"connected over {conn.kind}")
                return

    def watch(self, name: str, monitor: Monitor, describe: Callable[[Any], str] = str) -> None:
        """Report a discovery monitor's events as link status until stopped."""
        poller = _select.poll()
        poller.register(monitor.fileno(), _select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(500):
                continue
            event = monitor.poll(0)
            if event is not None:
                self.status(name, describe(event))
