"""Meeting the peer: many connections may come, one pairs.

One :class:`Lobby` is the whole search for a peer, for every kind of program
that waits for one: ``recovery receive``, ``recovery agent`` and the wizard.
Connections come from sources (a TCP listener, the cable, thunderbolt-net:
:meth:`Lobby.serve`) or are made to an address a person typed
(:meth:`Lobby.connect`). Each is handled in a thread of its own: hellos, then
the pairing. So a stranger that connects and stays silent (or trickles
bytes) holds up nobody:

- every connection has a fixed time in all to pair (:data:`PAIR_LIMIT`); a
  peer this side may *drive* (for a wizard: an agent or a wizard that waits
  for our user to type its code), and a wizard whose user is to type *our*
  code, is held longer (people read and type), or for as long as the cable
  joins us;
- at most :data:`MAX_CONTACTS` connections are handled at once, and at most
  :data:`MAX_PER_ORIGIN` from one origin (an address, an IPv6 /64): when the
  table (or that origin's share) is full, the oldest connection that has not
  paired gives way to the newcomer (never one this side reached itself, never
  the cable's, never the one a typed code is being tried on): one from an
  origin that must wait first, then one that only waits before one in the
  middle of an attempt. A newcomer from an origin that must wait gets no
  place in a full table. So a flood churns its own places, and a stranger
  holding every place with attempts it never finishes is pushed out by the
  real peer, which pairs in a few round trips;
- one :class:`~recovery.engine.peer.guard.CodeGuard` counts the tries of all of
  them, per origin and in all: a wrong code, an attempt left without its
  proof, a connection that did not pair in its time.

A code a person types here (:meth:`Lobby.drive`) is tried on the held peers
that can be driven, one after another: the cable's first. Whoever pairs first
wins (:meth:`Lobby.wait` returns it, or ``found`` is called); every other
connection is told this machine is busy and closed.

A lobby opened after a pairing ended may carry that peer's :class:`Pin`: each
connection whose hello gives the same host name is marked as maybe that
machine come back (``Seen.known``), any other as a different one, so a
screen never presents someone else as the peer it had. Nothing pairs by
itself: the peer proves a code again, and only then are its host name and
machine id (its introduction) authenticated and compared with the pin.
The one exception a person chooses: after a lost link (or at once after a
failed clone that keeps the pairing), a lobby may hold the pairing's rejoin
secret (:meth:`Lobby.rejoin`), and tries it, once per connection, on those
that name the pinned machine and list "rejoin": the secret is the proof
(only the two machines of that pairing hold it). One that refuses it as
stale (it restarted, or ended that pairing) or does not list "rejoin" never
will: the lobby drops the secret and says so
(:class:`~recovery.events.RejoinRefused`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from recovery import events
from recovery.engine.peer.control import DEFAULT_TIMEOUT
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.seen import TYPING, Pin, Refuse, Seen
from recovery.engine.peer.session import STDIO_CODE, Contact, PeerLink, meet, uses_stdio_code
from recovery.errors import CancelledError, Interrupted, LinkError, PairingError, RecoveryError
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.link.opening import Source
from recovery.protocol import messages as m

PAIR_LIMIT = 30.0  # seconds from a connection's first byte to its pairing, for a peer that drives
HOLD_LIMIT = 600.0  # seconds a peer that waits for our user to type its code is held (None on the cable)
MAX_CONTACTS = 16  # connections handshaking, pairing or waiting at once
MAX_PER_ORIGIN = 4  # of them from one address
MAX_TURNING_AWAY = 16  # connections told at once why a full table has no place for them
TURN_AWAY_WORDS = 0.2  # seconds a turned-away connection has to read why (a flood must not hold the slots)
PROTECTED = 3.0  # seconds a new connection cannot be pushed out (the real peer pairs well within it)
ACCEPT_SLICE = 0.5


class Lobby:
    """Serve ``guard``'s code to whoever comes, drive with codes typed here; the first pairing wins."""

    def __init__(
        self,
        guard: CodeGuard | None,
        role: str,
        *,
        offered: Callable[[], tuple[m.DiskInfo, ...]] = lambda: (),
        refuse: Refuse = lambda hello: None,
        sink: events.EventSink = events.ignore,
        found: Callable[[PeerLink], None] | None = None,
        changed: Callable[[list[Seen]], None] = lambda seen: None,
        timeout: float = DEFAULT_TIMEOUT,
        hostname: str | None = None,
        encrypt: bool | None = None,
        drives: tuple[str, ...] = (),
        pin: Pin | None = None,
    ) -> None:
        self.guard = guard
        self.pin = pin
        self.role = role
        self.drives = drives  # the roles of peers this side may drive (a wizard: DRIVABLE)
        self.offered = offered
        self.refuse = refuse
        self.sink = sink
        self.found = found
        self.changed = changed  # the list of connections changed (for a screen)
        self.timeout = timeout
        self.hostname = hostname
        self.encrypt = encrypt
        self.done = threading.Event()  # a peer paired, or the lobby was closed
        self._lock = threading.Lock()
        self._winner: PeerLink | None = None
        self._error: RecoveryError | None = None
        self._seen: list[Seen] = []
        self._sources: list[Source] = []
        self._kept: set[int] = set()  # ids of sources not to close at the end
        self._code: str | None = None  # typed here, to be tried on drivable peers
        self._tried: set[int] = set()
        self._trying: Seen | None = None
        self._rejoin: bytes | None = None  # a lost pairing's secret, to try on the pinned machine
        self._rejoining: Seen | None = None
        self._rejoin_tried: set[int] = set()  # connections it failed on (once each)
        self._turning_away = threading.Semaphore(MAX_TURNING_AWAY)

    # --- what comes in ---

    def serve(
        self, source: Source, *, limit: float = PAIR_LIMIT, hold: float | None = HOLD_LIMIT, keep: bool = False
    ) -> None:
        """Take connections from ``source`` in a thread until the lobby is done.

        ``limit``: seconds a connection has to pair; ``hold``: seconds a peer
        this side may drive is kept while it waits (None: as long as it stays);
        ``keep``: the source outlives the lobby (a listener kept for the next one).
        """
        with self._lock:
            self._sources.append(source)
            if keep:
                self._kept.add(id(source))
        threading.Thread(target=self._accept_loop, args=(source, limit, hold), name="lobby-accept", daemon=True).start()

    def _accept_loop(self, source: Source, limit: float, hold: float | None) -> None:
        while not self.done.is_set():
            try:
                conn = source.accept(ACCEPT_SLICE)
            except tcp.AcceptTimeout:
                continue
            except CancelledError:
                return
            except RecoveryError as e:
                self._source_failed(source, e)
                return
            if self.done.is_set() and id(source) in self._kept:
                source.give_back(conn)  # it came as this lobby ended: the next one on the source takes it
                return
            self._take(conn, limit, hold)

    def _source_failed(self, source: Source, error: RecoveryError) -> None:
        """A source can give no more connections: with none left, the wait ends with its error."""
        with self._lock:
            if self.done.is_set():
                return
            self._sources = [s for s in self._sources if s is not source]
            last = not self._sources
            if last:
                self._error = self._error or error
        if last:
            self.done.set()
        else:
            self.sink(events.Warning(f"no more connections from {_kind(source)}: {error.message}"))

    def _take(self, conn: Connection, limit: float, hold: float | None, *, ours: bool = False) -> None:
        seen = Seen(
            peer=conn.peer,
            link=conn.kind,
            conn=conn,
            drives=self.drives,
            ours=ours or conn.kind in ("tbstream", "tbnet"),
        )
        with self._lock:
            dropped = self._make_room(seen)
            if dropped is not seen:
                self._seen.append(seen)
        if dropped is seen:
            self._turn_away(conn)
            return
        if dropped is not None and dropped.conn is not None:
            dropped.conn.abort()  # its thread notices and ends; it was removed from the table already
        self._changed()
        threading.Thread(target=self._handle, args=(seen, limit, hold), name="lobby-contact", daemon=True).start()

    def _turn_away(self, conn: Connection) -> None:
        """No place for ``conn``: say why after the hellos (its origin must wait, or holds every place it
        may), a few at a time, each in a thread with the hello's own time limit; past that, just close it."""
        why = self.guard.waiting(conn.origin, conn.address) if self.guard is not None else None
        if why is None:
            why = (
                f"{conn.origin or 'that address'} holds every place it may here, with connections that have "
                "not paired yet: try again in a few seconds"
            )
        if self.done.is_set() or not self._turning_away.acquire(blocking=False):
            conn.abort()
            conn.close()
            return

        def tell() -> None:
            try:
                contact = meet(conn, self.role, timeout=self.timeout, hostname=self.hostname)
                contact.ctl.try_send(m.Error(code="pairing", message=f"no pairing attempts for now: {why}"))
                contact.ctl.last_words(TURN_AWAY_WORDS)
                contact.ctl.close()
            except RecoveryError:
                pass
            finally:
                conn.abort()
                conn.close()
                self._turning_away.release()

        threading.Thread(target=tell, name="lobby-turn-away", daemon=True).start()

    def _make_room(self, new: Seen) -> Seen | None:
        """Under the lock: the connection to drop so ``new`` fits (``new`` itself if nothing may go),
        removed from the table at once.

        An origin whose share is full makes room for itself only: its oldest connection goes, once older
        than :data:`PROTECTED` (its own flood cannot push out a newcomer of it, the real peer behind the
        same NAT). A full table makes room from the origin that holds the most places, its oldest first,
        whatever it is doing, as long as that origin holds more than the newcomer's would: a newcomer
        from an origin with no place yet always gets one, so a stranger holding every place from a few
        origins (with attempts it never finishes) cannot keep the real peer out. Connections this side
        reached itself, or a typed code is being tried on, never go; one from an origin that must wait
        goes first, and a newcomer from one gets no place."""
        if self.done.is_set():
            return new
        origin = new.conn.origin if new.conn is not None else ""
        places: dict[str, int] = {}
        for s in self._seen:
            key = s.conn.origin if s.conn is not None else ""
            places[key] = places.get(key, 0) + 1
        own = places.get(origin, 0) if origin else 0
        if own < MAX_PER_ORIGIN and len(self._seen) < MAX_CONTACTS:
            return None
        if self._must_wait(new):
            return new  # it must wait anyway: it takes nobody's place
        now = time.monotonic()
        movable = [s for s in self._seen if s is not self._trying and not s.ours]
        if own >= MAX_PER_ORIGIN:
            pool = [s for s in movable if s.conn is not None and s.conn.origin == origin and now - s.since >= PROTECTED]
        else:
            pool = [s for s in movable if self._must_wait(s) or places.get(s.conn.origin if s.conn else "", 0) > own]
        if not pool:
            return new
        victim = min(
            pool, key=lambda s: (not self._must_wait(s), -places.get(s.conn.origin if s.conn else "", 0), s.since)
        )
        self._seen.remove(victim)
        return victim

    def _must_wait(self, seen: Seen) -> bool:
        conn = seen.conn
        return self.guard is not None and conn is not None and self.guard.locked(conn.origin, conn.address)

    def hold(self, ep: tcp.Endpoint, *, retry: float = 2.0) -> None:
        """In a thread: connect to ``ep`` and keep the peer there, to be driven once a person
        types its code (again whenever that connection ends), until the lobby is done."""
        threading.Thread(target=self._hold, args=(ep, retry), name="lobby-hold", daemon=True).start()

    def _hold(self, ep: tcp.Endpoint, retry: float) -> None:
        while not self.done.is_set():
            try:
                conn = tcp.connect(ep, timeout=5.0)
            except LinkError as e:
                self.sink(events.Phase("connect", f"{e.message}; trying again"))
                if self.done.wait(retry):
                    return
                continue
            ended = threading.Event()
            conn.on_close.append(ended.set)
            self._take(conn, PAIR_LIMIT, HOLD_LIMIT, ours=True)
            while not ended.wait(0.25):
                if self.done.is_set():
                    return
            if self.done.wait(retry):
                return

    def connect(self, ep: tcp.Endpoint, code: str, *, attempts: int = 3) -> None:
        """In a thread: connect to ``ep`` and drive the pairing with ``code`` (a person typed both)."""
        threading.Thread(target=self._connect, args=(ep, code, attempts), name="lobby-connect", daemon=True).start()

    def _connect(self, ep: tcp.Endpoint, code: str, attempts: int) -> None:
        for n in range(attempts):
            if self.done.is_set():
                return
            try:
                conn = tcp.connect(ep, timeout=5.0)
                break
            except LinkError as e:
                if n + 1 == attempts:
                    self.sink(events.PairingAttempt(peer=str(ep), ok=False, reason="link_lost", message=e.message))
                    return
                if self.done.wait(2.0):
                    return
        seen = Seen(peer=str(ep), link=conn.kind, conn=conn, drives=self.drives, ours=True)
        with self._lock:
            self._seen.append(seen)
        self._changed()
        try:
            contact = self._meet(seen)
            link = contact.drive(code)
        except RecoveryError as e:
            if not (isinstance(e, PairingError) and seen.contact is not None):  # the contact told why itself
                self.sink(
                    events.PairingAttempt(peer=seen.hostname or str(ep), ok=False, reason=e.code, message=e.message)
                )
            self._drop(seen)
            return
        self._won(seen, link)

    # --- codes typed here ---

    def drive(self, code: str, *, peer: str | None = None) -> bool:
        """Try ``code`` on the peers waiting to be driven (only the one reached at ``peer``,
        when given); False if none waits."""
        with self._lock:
            waiting = [s for s in self._seen if s.drivable and s.contact]
            if peer is not None:
                waiting = [s for s in waiting if s.peer == peer]
            if not waiting:
                return False
            self._code, self._trying = code, None
            self._tried = {id(s) for s in self._seen} - {id(s) for s in waiting}
        return True

    def rejoin(self, secret: bytes | None) -> None:
        """Pair again by itself with the pinned machine when it comes back, proving ``secret``."""
        with self._lock:
            self._rejoin = secret

    def _heard(self, event: events.Event) -> None:
        """What a contact tells: one that refuses the rejoin secret as stale (it holds no such pairing,
        having restarted or ended it) will never take it, so the wait for it is over."""
        if isinstance(event, events.RejoinRefused):
            self.rejoin(None)
        self.sink(event)

    def _rejoin_unsupported(self, seen: Seen, contact: Contact) -> None:
        """The pinned machine came back but cannot pair by a secret (no "rejoin"): the wait is over."""
        with self._lock:
            waiting = self._rejoin is not None and bool(seen.known) and seen.drivable
        if waiting and "rejoin" not in contact.theirs.caps:
            name = contact.theirs.host.hostname
            self._heard(events.RejoinRefused(name, f"{name} cannot pair again without a code: type the code it shows"))

    def _wants_drive(self, seen: Seen) -> str | bytes | None:
        with self._lock:
            contact = seen.contact
            if (
                self._rejoin is not None
                and self._trying is None
                and seen.known
                and contact is not None
                and "rejoin" in contact.theirs.caps
                and seen.drivable
                and id(seen) not in self._rejoin_tried
            ):
                self._trying = self._rejoining = seen
                return self._rejoin
            if self._code is None or self._trying is not None or id(seen) in self._tried:
                return None
            order = sorted(
                (s for s in self._seen if s.drivable and s.contact and id(s) not in self._tried),
                key=lambda s: (s.link not in ("tbstream", "tbnet"), s.since),
            )
            if not order or order[0] is not seen:
                return None
            self._trying = seen
            return self._code

    def _drove(self, seen: Seen, ok: bool) -> None:
        with self._lock:
            if seen is self._rejoining:  # once per connection; a connection that only says the name fails
                self._rejoining = self._trying = None
                self._rejoin_tried.add(id(seen))
                if ok:
                    self._rejoin = None
                return
            self._tried.add(id(seen))
            self._trying = None
            left = [s for s in self._seen if s.drivable and s.contact and id(s) not in self._tried]
            if ok or not left:
                self._code = None

    # --- one connection ---

    def _meet(self, seen: Seen) -> Contact:
        assert seen.conn is not None
        contact = meet(
            seen.conn, self.role, timeout=self.timeout, sink=self._heard, hostname=self.hostname, encrypt=self.encrypt
        )
        seen.contact = contact
        seen.hostname, seen.role = contact.theirs.host.hostname, contact.theirs.role
        seen.known = self.pin.named(contact.theirs) if self.pin else None
        seen.state = "waiting for the pairing"
        self._changed()
        return contact

    def _handle(self, seen: Seen, limit: float, hold: float | None) -> None:
        try:
            contact = self._meet(seen)
        except RecoveryError as e:
            if not self.done.is_set():
                self.sink(events.PairingAttempt(peer=seen.peer, ok=False, reason=e.code, message=e.message))
            self._drop(seen)
            return
        self._rejoin_unsupported(seen, contact)
        try:
            why = self.refuse(contact.theirs)
            if why is not None:
                contact.ctl.try_send(m.Error(code="refused", message=why[:1000]))
                raise CancelledError(why)
            guard = CodeGuard(STDIO_CODE) if uses_stdio_code(contact.conn) else self.guard
            wait: float | None = limit
            if seen.drivable or seen.role in TYPING:  # a person is to type a code: as long as people take
                wait = None if seen.link in ("tbstream", "tbnet") or hold is None else hold
            link = contact.await_pairing(
                guard,
                offered=self.offered,
                wants_drive=lambda: self._wants_drive(seen),
                drove=lambda ok: self._drove(seen, ok),
                limit=wait,
                stop=self.done,
            )
        except RecoveryError as e:
            tried = contact.ctl.state.attempts > 0
            if self.done.is_set() or (isinstance(e, LinkError) and tried):  # it left after its tries
                pass
            elif seen.ours and not tried and isinstance(e, LinkError | CancelledError):  # held, gone: again
                self.sink(events.Phase("connect", f"{contact.name} closed the connection; connecting again"))
            else:
                self.sink(events.PairingAttempt(peer=contact.name, ok=False, reason=e.code, message=e.message))
            self._drop(seen, e.message)
            return
        except BaseException as e:  # noqa: BLE001 - a bug in one contact must not end the wait silently
            self._drop(seen)
            with self._lock:
                self._error = RecoveryError(f"internal error while pairing: {type(e).__name__}: {e}")
            self.done.set()
            return
        self._won(seen, link)

    def _won(self, seen: Seen, link: PeerLink) -> None:
        with self._lock:
            first = self._winner is None and not self.done.is_set()
            if first:
                self._winner = link
                self.done.set()
        if not first:
            link.ctl.try_send(m.Cancel(reason=f"{link.ours.host.hostname} is busy with another peer"))
            link.close()
            self._drop(seen)
            return
        with self._lock:
            self._seen = [s for s in self._seen if s is not seen]
        self._end_the_rest()
        if self.found is not None:
            self.found(link)

    def _drop(self, seen: Seen, why: str = "") -> None:
        """``seen`` ends without pairing (its own doing, its time up, or pushed out): unless this lobby ended
        it, one that made no pairing attempt counts against its address (an attempt counted already)."""
        contact, conn = seen.contact, seen.conn
        if (
            not (self.done.is_set() or seen.ours)
            and self.guard is not None
            and conn is not None
            and (contact is None or contact.ctl.state.attempts == 0)
        ):
            self.guard.stalled(conn.address or conn.origin)
        with self._lock:
            self._seen = [s for s in self._seen if s is not seen]
            if self._trying is seen:
                self._trying = None
            if self._rejoining is seen:
                self._rejoining = None
        if seen.contact is not None:
            seen.contact.close(why)
        elif seen.conn is not None:
            seen.conn.abort()
            seen.conn.close()
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            seen = list(self._seen)
        self.changed(seen)

    def _end_the_rest(self) -> None:
        with self._lock:
            sources = [s for s in self._sources if id(s) not in self._kept]
            self._sources = []
            rest = list(self._seen)
        for source in sources:
            source.close()
        for s in rest:
            if s.conn is not None:
                s.conn.abort()  # its thread notices, tells nothing more, and drops it

    # --- the end ---

    def wait(self, cancel: threading.Event | None = None) -> PeerLink:
        """Block until a peer pairs; :class:`Interrupted` once ``cancel`` is set."""
        while not self.done.wait(0.25):
            if cancel is not None and cancel.is_set():
                self.close()
                raise Interrupted("interrupted by the user")
        if self._winner is None:
            raise self._error or CancelledError("stopped waiting for a peer")
        return self._winner

    def close(self) -> None:
        """Stop waiting: every source and connection (not a paired one) ends."""
        self.done.set()
        self._end_the_rest()

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)


def _kind(source: Source) -> str:
    return type(source).__name__.strip("_").lower()
