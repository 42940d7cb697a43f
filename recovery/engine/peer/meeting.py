"""Where a program waits for its peer: the ways, and the threads that feed them to a lobby.

The wizard and ``recovery agent`` wait the same way, through one
:class:`Meeting` for the whole run: on the cable (roles by the host UUIDs,
:mod:`recovery.engine.peer.cable`), listening on TCP (the listener is made once,
retried while the port is busy, and kept from one pairing to the next, so
the port people were told stays right), on a link given with ``--link``, and
holding a peer reached at an address (reconnecting whenever that connection
ends). For each wait :meth:`Meeting.feed` hands all of it to a new
:class:`~recovery.engine.peer.lobby.Lobby`, which pairs one of them. What each way
is doing is reported as ``status(way, text)`` lines, and where this machine
listens as ``listening(way, host, port)`` (``host`` empty: every address).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from recovery.engine.peer.cable import Opener, cable_source, open_cable, watch
from recovery.engine.peer.lobby import PAIR_LIMIT, Lobby
from recovery.errors import RecoveryError
from recovery.link import tcp
from recovery.link.discovery import CableMonitor
from recovery.link.opening import Source, listen
from recovery.link.spec import LinkSpec

Status = Callable[[str, str], None]  # (way, text)
Listening = Callable[[str, str, int], None]  # (way, host or "" for every address, port)
LISTEN_RETRY = 2.0  # seconds between tries while the TCP port is busy
WILDCARDS = ("", "*", "::", "0.0.0.0")


@dataclass(frozen=True)
class Ways:
    """How to wait for the peer; any mix of them at once."""

    cable: LinkSpec | None = None  # the cable: auto, tbnet[:IFACE] or tbstream
    listen: tcp.Endpoint | None = None  # TCP
    connect: tcp.Endpoint | None = None  # reach (and keep reaching) a peer at this address
    other: LinkSpec | None = None  # another link to listen on (stdio)
    watch_cable: bool = True  # with ``cable``: report what the bus shows as status lines
    cable_opener: Opener | None = None  # tests: what opens one attempt on the cable

    @property
    def empty(self) -> bool:
        return not (self.cable or self.listen or self.connect or self.other)


class Meeting:
    """The ways of one program's run; :meth:`feed` each lobby, :meth:`close` at the end."""

    def __init__(
        self,
        ways: Ways,
        *,
        status: Status = lambda way, text: None,
        listening: Listening = lambda way, host, port: None,
        limit: float = PAIR_LIMIT,
    ) -> None:
        self.ways, self.status, self.listening, self.limit = ways, status, listening, limit
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._tcp: Source | None = None
        self._other: Source | None = None

    def feed(self, lobby: Lobby, *, connect: tcp.Endpoint | None = None) -> None:
        """Feed ``lobby`` from every way, each in its own thread, until it is done; ``connect``
        replaces the address to hold (the peer reached last)."""
        ways = self.ways
        if ways.cable is not None:
            threading.Thread(target=self._cable, args=(lobby,), name="meet-cable", daemon=True).start()
        if ways.listen is not None:
            threading.Thread(target=self._listen, args=(lobby, ways.listen), name="meet-tcp", daemon=True).start()
        if ways.other is not None:
            with self._lock:
                if self._other is None:
                    self._other = listen(ways.other, on_listening=lambda h, p, link: self.listening(link, h, p))
            lobby.serve(self._other, limit=self.limit, keep=True)
        target = connect or ways.connect
        if target is not None:
            lobby.hold(target)

    def _cable(self, lobby: Lobby) -> None:
        spec = self.ways.cable
        assert spec is not None
        opener = self.ways.cable_opener or (lambda stop: open_cable(stop, spec=spec))
        lobby.serve(cable_source(self.status, opener), hold=None)
        if not self.ways.watch_cable:
            return
        try:
            monitor = CableMonitor()
        except RecoveryError as e:
            self.status("cable", f"cannot watch the cable: {e.message}")
            return
        watch(monitor, self.status, lobby.done)

    def listen_now(self) -> None:
        """Make the TCP listener (and any other) now, raising if it cannot be made (an agent
        says so and exits; a wizard leaves it to :meth:`feed`, which tries again)."""
        if self.ways.listen is not None:
            with self._lock:
                if self._tcp is None:
                    self._tcp = listen(LinkSpec("tcp", self.ways.listen), on_listening=self._on_listening)

    def _on_listening(self, host: str, port: int, link: str) -> None:
        bound = "" if host in WILDCARDS else host
        self.status("tcp", f"listening on port {port}" + (f" of {bound} only" if bound else ""))
        self.listening("tcp", bound, port)

    def _listen(self, lobby: Lobby, ep: tcp.Endpoint) -> None:
        while not (lobby.done.is_set() or self.closed.is_set()):
            with self._lock:
                if self._tcp is None:
                    try:
                        self._tcp = listen(LinkSpec("tcp", ep), on_listening=self._on_listening)
                    except RecoveryError as e:  # the port is busy (another program, or one just closing)
                        self.status("tcp", f"cannot listen: {e.message}; trying again...")
                source = self._tcp
            if source is not None:
                lobby.serve(source, limit=self.limit, keep=True)
                return
            if lobby.done.wait(LISTEN_RETRY):
                return

    def close(self) -> None:
        """The program ends: the kept listeners close."""
        self.closed.set()
        with self._lock:
            sources, self._tcp, self._other = [self._tcp, self._other], None, None
        for source in sources:
            if source is not None:
                source.close()
        self.status("tcp", "not listening")
