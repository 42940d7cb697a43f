"""The control channel at run time: a reader thread, pings, liveness, pairing.

Wraps the pure :class:`~recovery.protocol.state.ControlConnection` with the
I/O: one thread reads and decodes the peer's records into an inbox (and
writes at once what the pairing must answer, so nothing sealed can overtake
it), another pings every :data:`PING_INTERVAL` seconds so that a silent peer
is noticed. The peer counts as gone when nothing arrived on either channel
for ``timeout`` seconds.

What a peer sends cannot make this side grow: the inbox holds at most
:data:`INBOX_LIMIT` messages (the reader then waits, and the peer's sends
with it), and ``progress`` messages are kept as the latest one only, however
fast they come (a session thread busy reading the target back does not read
its inbox for a long time).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import NoReturn

from recovery.engine.peer.guard import Verdict
from recovery.errors import (
    CancelledError,
    Interrupted,
    LinkError,
    PairingError,
    PeerLeftError,
    RecoveryError,
    RemoteProtocolError,
    error_from_code,
)
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.state import (
    ControlConnection,
    Event,
    Paired,
    PairingFailed,
    PairingRequested,
    ProofArrived,
    Reply,
    State,
)

PING_INTERVAL = 2.0
DEFAULT_TIMEOUT = 30.0
HELLO_LIMIT = 10.0  # seconds for the peer's preamble and hello, however it trickles them
ATTEMPT_LIMIT = 5.0  # seconds for each step of a pairing attempt (one round trip each)
LAST_WORDS = 1.0  # seconds the peer has to read why we stop before the connection is torn down
UNPAIRED_CODES = ("protocol", "refused", "pairing")  # what a peer may say it stops for before it is paired
INBOX_LIMIT = 256  # messages read and not yet taken by the session


class _LatestProgress:
    """Stands in the inbox for the newest ``progress`` message (see :meth:`ControlLink._deliver`)."""


Inbound = Event | BaseException


class ControlLink:
    def __init__(
        self, conn: Connection, timeout: float = DEFAULT_TIMEOUT, cancel: threading.Event | None = None
    ) -> None:
        self.conn = conn
        self.cancel = cancel or threading.Event()  # set by the user: stop, and tell the peer
        self.stop_reason = "interrupted by the user"  # what the peer is told when ``cancel`` is set
        self.ends_pairing = False  # and whether this side leaves the pairing too (see :meth:`stop`)
        self.channel = conn.control
        self.timeout = timeout
        self.state = ControlConnection(binding=conn.binding)
        self.inbox: queue.Queue[Inbound | _LatestProgress] = queue.Queue(INBOX_LIMIT)
        self._progress: m.Progress | None = None  # the newest one, while its stand-in waits in the inbox
        self._progress_lock = threading.Lock()
        self.peer_name = "the peer"  # its host name, once its hello is here: names what it reports
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---

    def start(self, hello: m.Hello, limit: float = HELLO_LIMIT) -> m.Hello:
        """Send our preamble and hello, start the threads, return the peer's hello.

        The peer has ``limit`` seconds in all for its preamble and hello.
        """
        with self._lock:
            data = self.state.preamble() + self.state.send(hello)
        self.channel.send(data)
        for target, name in ((self._read_loop, "control-read"), (self._ping_loop, "control-ping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + limit
        while True:
            event = self.poll_event(max(0.0, min(0.5, deadline - time.monotonic())))
            if isinstance(event, m.Hello):
                self.peer_name = event.host.hostname
                return event
            if event is not None:
                raise RemoteProtocolError(f"unexpected {type(event).__name__} before the peer's hello")
            if time.monotonic() >= deadline:
                raise LinkError(f"the peer at {self.conn.peer} did not say hello within {limit:.0f} s")

    def close(self) -> None:
        self._closed.set()

    def stop(self, reason: str, *, ends_pairing: bool = False) -> None:
        """This side's user stops what runs on the link: the peer is told ``reason`` (its ``cancel``),
        and with ``ends_pairing`` that this side leaves the pairing too (its user quit or ended it)."""
        self.stop_reason, self.ends_pairing = reason, ends_pairing
        self.cancel.set()

    def last_words(self, wait: float = LAST_WORDS) -> None:
        """After telling the peer why we stop: half-close the control channel and give the peer up
        to ``wait`` seconds to read it and close (our reader sees that), so the words arrive."""
        self.channel.finish_sending()
        reader = self._threads[0] if self._threads else None
        if reader is not None and reader is not threading.current_thread():
            reader.join(wait)

    # --- sending ---

    def send(self, msg: m.Message) -> None:
        """Send ``msg``; if the peer has ended the connection meanwhile (its error or cancel is queued,
        not read yet), raise the peer's reason, not a protocol error of this side's."""
        with self._lock:
            if self.state.state is not State.CLOSED:
                self.channel.send(self.state.send(msg))
                return
        self._peer_said_stop()

    def send_raw(self, make: object) -> None:
        """Write what ``make()`` returns (a pairing step of the state machine), atomically with it."""
        with self._lock:
            data = make()  # type: ignore[operator]
            if data:
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
        elif isinstance(error, Interrupted):
            self.try_send(m.Cancel(reason=error.message[:1000], ends_pairing=self.ends_pairing))
        elif isinstance(error, CancelledError):
            self.try_send(m.Cancel(reason=error.message[:1000]))
        elif isinstance(error, RecoveryError):
            if error.peer is None and not isinstance(error, LinkError):
                self.try_send(
                    m.Error(
                        code=error.code, message=error.message[:1000], hint=error.hint[:1000] if error.hint else None
                    )
                )
        else:
            self.try_send(m.Error(code="internal", message=f"internal error: {error}"[:1000]))

    # --- receiving ---

    def _read_loop(self) -> None:
        try:
            while not self._closed.is_set():
                data = self.channel.recv_some(65536)
                if not data:
                    raise LinkError("link lost: the peer closed the connection")
                events: list[Event] = []
                with self._lock:
                    self.state.receive_data(data)
                    while (event := self.state.next_event()) is not None:
                        if isinstance(event, Reply):
                            self.channel.send(event.data)  # a pairing step: before anything else
                            continue
                        if isinstance(event, PairingFailed) and event.reply:
                            self.channel.send(event.reply)
                        if not isinstance(event, m.Ping):
                            events.append(event)
                for event in events:  # outside the lock: a full inbox must not block our own sends
                    self._deliver(event)
        except BaseException as e:  # noqa: BLE001 - delivered to the session thread
            if not self._closed.is_set():
                self._deliver(e)

    def _deliver(self, item: Inbound) -> None:
        """Into the inbox, waiting while it is full; a ``progress`` replaces the one not taken yet."""
        if isinstance(item, m.Progress):
            with self._progress_lock:
                waiting, self._progress = self._progress is not None, item
            if waiting:
                return
            self._put(_LatestProgress())
        else:
            self._put(item)

    def _put(self, item: Inbound | _LatestProgress) -> None:
        while not self._closed.is_set():
            try:
                self.inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _take(self, timeout: float) -> Inbound:
        """The next inbox item (raises queue.Empty), the newest progress for its stand-in."""
        item = self.inbox.get(timeout=timeout)
        if isinstance(item, _LatestProgress):
            with self._progress_lock:
                progress, self._progress = self._progress, None
            assert progress is not None
            return progress
        return item

    def _ping_loop(self) -> None:
        while not self._closed.wait(PING_INTERVAL):
            with self._lock:
                if self.state.state in (State.HANDSHAKE, State.CLOSED, State.BROKEN, State.ENDING):
                    continue
            try:
                self.send(m.Ping())
            except (RecoveryError, OSError):
                return

    def poll(self, timeout: float) -> m.Message | None:
        """The next message within ``timeout`` seconds, or None (after the pairing)."""
        event = self.poll_event(timeout)
        if event is not None and not isinstance(event, m.Message):
            raise RemoteProtocolError(f"unexpected {_name(event)} after the pairing")
        return event

    def poll_event(self, timeout: float) -> Event | None:
        """The next message or pairing event within ``timeout`` seconds, or None.

        Raises the peer's error or cancel as this side's error,
        :class:`Interrupted` when this side's user cancelled, and
        :class:`LinkError` when the peer has been silent too long.
        """
        if self.cancel.is_set():
            raise Interrupted(self.stop_reason)
        try:
            item = self._take(timeout)
        except queue.Empty:
            silent = time.monotonic() - self.conn.last_activity()
            if silent > self.timeout:
                raise LinkError(f"link lost: nothing heard from the peer for {silent:.0f} s") from None
            return None
        if isinstance(item, m.Error) and not self.state.paired and item.code not in UNPAIRED_CODES:
            # An unproven peer cannot make this side report a verification failure or the like.
            raise PairingError(f"peer (not paired): {item.message}")
        if isinstance(item, BaseException | m.Error | m.Cancel):
            self._raise(item)
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
                item = self._take(left)
            except queue.Empty:
                break
            if isinstance(item, m.Error | m.Cancel):
                return self._peers_reason(item)
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
            raise RemoteProtocolError(f"unexpected {_name(msg)} from the peer")

    # --- pairing ---

    def drive(self, secret: bytes, limit: float = ATTEMPT_LIMIT, *, rejoin: bool = False) -> Paired | PairingFailed:
        """One pairing attempt with the code a person typed (or a lost pairing's rejoin secret); its outcome."""
        self._peer_said_stop()
        self.send_raw(lambda: self.state.drive(secret, rejoin=rejoin))
        event = self._outcome(2 * limit)  # two round trips: its answer, then its proof
        assert isinstance(event, Paired | PairingFailed)
        return event

    def _peer_said_stop(self) -> None:
        """If the peer already ended the connection (an error, a cancel), raise its reason now."""
        with self._lock:  # the reader decodes and queues under it: what made it closed is queued
            if self.state.state is not State.CLOSED:
                return
        while True:
            try:
                item = self._take(0)
            except queue.Empty:
                raise LinkError("link lost: the peer closed the connection") from None
            if isinstance(item, m.Error | m.Cancel | BaseException):
                self._raise(item)

    def _raise(self, item: BaseException | m.Error | m.Cancel) -> NoReturn:
        """An inbox item that ends the session, as the error this side raises."""
        if isinstance(item, m.Error | m.Cancel):
            raise self._peers_reason(item)
        raise item

    def _peers_reason(self, item: m.Error | m.Cancel) -> RecoveryError:
        """The peer's ``error`` or ``cancel`` as the error this side stops with: a cancel by which the peer
        leaves the pairing (its user quit or ended it) is :class:`PeerLeftError`."""
        if isinstance(item, m.Error):
            return error_from_code(item.code, item.message, self.peer_name, item.hint)
        if item.ends_pairing:
            return PeerLeftError(f"{self.peer_name} ended the session: {item.reason}")
        return CancelledError(f"the peer cancelled: {item.reason}")

    def refuse(self, reason: str, message: str) -> PairingFailed:
        """Turn the peer's attempt away without trying the code."""
        self.send_raw(lambda: self.state.refuse(reason, message))
        return PairingFailed(self.state.attempts, reason, message, by_peer=False)

    def answer(self, secret: bytes, limit: float = ATTEMPT_LIMIT) -> ProofArrived | PairingFailed:
        """Answer the peer's attempt with this machine's code; then its proof, or why none came."""
        self.send_raw(lambda: self.state.answer(secret))
        if self.state.state is State.UNPAIRED:  # the peer's message was malformed: answered with a refusal
            return PairingFailed(
                self.state.attempts, "malformed", "the peer's pairing message is malformed", by_peer=False
            )
        event = self._outcome(limit, ProofArrived)
        assert isinstance(event, ProofArrived | PairingFailed)
        return event

    def conclude(self, verdict: Verdict) -> Paired | PairingFailed:
        """End the attempt on the guard's verdict about the peer's proof (see :class:`CodeGuard`)."""
        with self._lock:
            if verdict.outcome in ("paired", "wrong_code"):
                outcome, reply = self.state.judge(
                    verdict.outcome == "paired", tries_left=verdict.tries_left, new_code=verdict.new_code
                )
            else:
                reply = self.state.refuse(verdict.outcome, verdict.message)
                outcome = PairingFailed(self.state.attempts, verdict.outcome, verdict.message, by_peer=False)
            self.channel.send(reply)
        return outcome

    def proof_holds(self) -> bool:
        with self._lock:
            return self.state.proof_holds()

    def _outcome(self, limit: float, *also: type) -> Event:
        deadline = time.monotonic() + limit
        while True:
            try:
                event = self.poll_event(max(0.0, min(0.5, deadline - time.monotonic())))
            except LinkError:
                if self.state.state in (State.PAIRING, State.UNPAIRED):
                    raise PairingError(f"{self.conn.peer} left during the pairing") from None
                raise
            if event is not None:
                if isinstance(event, (Paired, PairingFailed, *also)):
                    return event
                raise RemoteProtocolError(f"unexpected {_name(event)} during the pairing")
            if time.monotonic() >= deadline:
                raise PairingError(f"the pairing with {self.conn.peer} did not finish within {limit:.0f} s")

    def wait_pairing_request(self, timeout: float) -> PairingRequested | None:
        """The peer's next pairing attempt, or None if none started within ``timeout``."""
        event = self.poll_event(timeout)
        if event is None or isinstance(event, PairingRequested):
            return event
        if isinstance(event, PairingFailed):
            return None  # the end of an attempt already given up (both drove at once)
        raise RemoteProtocolError(f"unexpected {_name(event)} before the pairing")


def _name(event: object) -> str:
    kind = getattr(event, "type", None)
    return f"{kind!r} message" if kind else type(event).__name__
