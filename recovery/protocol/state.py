"""The control connection's state machine (pure, no I/O).

Theory of operation
-------------------
Both sides send a preamble and a ``hello`` in the clear. The connection is
then *unpaired*: only pings, errors, cancels and pairing messages may cross.
A pairing attempt (:mod:`recovery.protocol.pake`) starts when the side that
drives sends ``pake``; the serving side answers with its own ``pake`` (or
``pair_failed``: locked); the driver sends its ``confirm``; the server, once
its guard allows, checks it and sends its own ``confirm`` (or ``pair_failed``:
a wrong code, locked), and the driver checks that: *paired*. The driver
proves first, so an attempt it abandons reveals nothing and costs the server
nothing to forgive. A failed attempt leaves the connection unpaired, and a
new attempt may start. From the moment a side is paired, every record it
sends and receives is sealed with the session's control keys.

Once paired, the driver may propose a clone: it sends a ``plan`` and becomes
the *sender*; or it sends a ``request`` asking the server to send one of its
disks, and the server answers with a ``plan`` (becoming the sender) or a
``refuse``. The receiver answers a plan with ``accept`` or ``refuse``. While
frames stream on the data channel the receiver sends ``ack`` (durable frames)
and both may send ``progress``; the sender ends with ``done``, the receiver
with ``summary``, after which the connection is idle again. Either side may
end an idle session with ``bye``; the other answers ``bye``, then both close.
While idle the driver may say what its user does (``activity``, optional),
and ask what a folder of the server holds (``find_images``, capability
"images"), which the server answers with ``images`` before anything else,
and ask what the target of the clone it is about to plan is (``measure``,
capability "fit"), answered with ``measured``.
``ping`` is allowed at any time after the hellos; ``error`` and ``cancel``
close the connection from any state.

Capabilities add steps inside a clone. "resume": an ``accept`` that offers
a resume is followed by the receiver's ``digests`` and the sender's
``start``. "resend": the receiver may ask for a damaged frame again with
``resend`` while streaming or finishing (the clone streams again); each
resend opens a new *epoch*, and a ``done`` of an older epoch (sent before the
sender heard of the resend) is stale: it changes nothing. "source-check":
while finishing, the receiver may name the filesystem checks that failed on
the target (``check_source``), and the sender answers how they went on its
source (``source_checked``).

Every legal clone step is a row of :data:`TRANSITIONS`; anything else is a
protocol error, raised as :class:`LocalProtocolError` when this side tries
it and :class:`RemoteProtocolError` when the peer does. After an error the
connection refuses every further call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from recovery.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from recovery.protocol import messages as m
from recovery.protocol import pake
from recovery.protocol.pake import DRIVER, SERVER, Attempt, MalformedPairing, Opener, Sealer, SessionKeys

SEAL_AAD = b"U4RC/2 control"


class State(enum.Enum):
    HANDSHAKE = "handshake"  # waiting for both hellos
    UNPAIRED = "unpaired"  # hellos exchanged; a pairing attempt may start
    PAIRING = "pairing"  # an attempt runs
    IDLE = "idle"  # paired, no clone running
    REQUESTED = "requested"  # a request awaits the peer's plan or refusal
    BROWSING = "browsing"  # a find_images awaits the peer's images
    MEASURING = "measuring"  # a measure awaits the receiver's measured
    PLANNED = "planned"  # a plan awaits the receiver's accept or refusal
    STREAMING = "streaming"
    FINISHING = "finishing"  # done sent; the receiver verifies and summarises
    ENDING = "ending"  # one side said bye
    CLOSED = "closed"  # after error, cancel or both byes
    BROKEN = "broken"  # after a protocol violation


# Who may send a message, relative to the pairing and the current clone.
ANY = "any"
DRIVES = "driver"  # the side that drove the pairing
SENDER = "sender"  # the side that sent the plan
RECEIVER = "receiver"
REQUESTED = "requested"  # the side a request was sent to

# (state, message type) -> (who may send it, next state)
TRANSITIONS: dict[tuple[State, str], tuple[str, State]] = {
    (State.IDLE, "introduce"): (ANY, State.IDLE),
    (State.IDLE, "inventory"): (ANY, State.IDLE),
    (State.IDLE, "activity"): (DRIVES, State.IDLE),
    (State.IDLE, "plan"): (DRIVES, State.PLANNED),
    (State.IDLE, "request"): (DRIVES, State.REQUESTED),
    (State.IDLE, "bye"): (ANY, State.ENDING),
    (State.IDLE, "find_images"): (DRIVES, State.BROWSING),
    (State.BROWSING, "images"): (REQUESTED, State.IDLE),
    (State.IDLE, "measure"): (DRIVES, State.MEASURING),
    (State.MEASURING, "measured"): (REQUESTED, State.IDLE),
    (State.REQUESTED, "plan"): (REQUESTED, State.PLANNED),
    (State.REQUESTED, "refuse"): (REQUESTED, State.IDLE),
    (State.PLANNED, "accept"): (RECEIVER, State.STREAMING),
    (State.PLANNED, "refuse"): (RECEIVER, State.IDLE),
    (State.PLANNED, "progress"): (ANY, State.PLANNED),
    (State.STREAMING, "ack"): (RECEIVER, State.STREAMING),
    (State.STREAMING, "progress"): (ANY, State.STREAMING),
    (State.STREAMING, "done"): (SENDER, State.FINISHING),
    (State.STREAMING, "digests"): (RECEIVER, State.STREAMING),
    (State.STREAMING, "start"): (SENDER, State.STREAMING),
    (State.STREAMING, "resend"): (RECEIVER, State.STREAMING),
    (State.FINISHING, "resend"): (RECEIVER, State.STREAMING),
    (State.FINISHING, "ack"): (RECEIVER, State.FINISHING),
    (State.FINISHING, "progress"): (ANY, State.FINISHING),
    (State.FINISHING, "summary"): (RECEIVER, State.IDLE),
    (State.FINISHING, "check_source"): (RECEIVER, State.FINISHING),
    (State.FINISHING, "source_checked"): (SENDER, State.FINISHING),
    (State.ENDING, "bye"): (ANY, State.CLOSED),
}
# Allowed in every state after the hellos, and before them for error/cancel.
ANYTIME = {"ping": False, "error": True, "cancel": True}  # type -> closes?
PAIRING_TYPES = ("pake", "confirm", "pair_failed")


# --- pairing events (what next_event() gives besides the peer's messages) ---


@dataclass(frozen=True, slots=True)
class PairingRequested:
    """The peer drives an attempt: call :meth:`ControlConnection.answer` or :meth:`~ControlConnection.refuse`."""

    attempt: int
    rejoin: bool = False  # it proves the lost pairing's rejoin secret, not this machine's code


@dataclass(frozen=True, slots=True)
class ProofArrived:
    """The driver's proof arrived: check it (:meth:`ControlConnection.judge`) when the guard allows,
    or turn it away unchecked (:meth:`ControlConnection.refuse`)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes to write at once, in order, before anything else (a step of the pairing)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Paired:
    """The attempt succeeded: every record from now on is sealed."""

    role: str  # ours: "driver" or "server"
    fingerprint: str


@dataclass(frozen=True, slots=True)
class PairingFailed:
    """The attempt ended without keys; write ``reply`` (it may be empty). The link stays, unpaired."""

    attempt: int
    reason: str  # "wrong_code", "locked", "stale", "conflict", "no_code", "malformed"
    message: str
    by_peer: bool  # the peer said so (else this side found it)
    reply: bytes = b""
    tries_left: int | None = None  # a wrong code: tries left before the code changes (if the server says)
    new_code: bool = False  # a wrong code: the server shows a new code now


Event = m.Message | PairingRequested | ProofArrived | Paired | PairingFailed | Reply


_WIRE_REASONS = ("wrong_code", "locked", "stale", "conflict", "no_code")


def _unhex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise RemoteProtocolError("a pairing message is not hexadecimal") from None


class ControlConnection:
    """Tracks one control channel: encodes what we send, decodes what we get.

    ``send(msg)`` returns the bytes to write; ``receive_data(b)`` then
    ``next_event()`` yields checked messages from the peer and pairing events.
    ``binding`` names the link (its session token or handshake nonces) and is
    bound into every pairing transcript.
    """

    def __init__(self, binding: bytes = b"") -> None:
        self.state = State.HANDSHAKE
        self.decoder = m.ControlDecoder()
        self.decoder.limit = m.MAX_CLEAR_MESSAGE
        self.binding = binding
        self.our_hello: m.Hello | None = None
        self.their_hello: m.Hello | None = None
        self._hello_bodies: dict[bool, bytes] = {}  # ours? -> the exact JSON that crossed
        self.we_are_sender: bool | None = None  # set by a plan
        self._request_to_us: bool | None = None
        # pairing
        self.role: str | None = None  # once paired: "driver" or "server"
        self.keys: SessionKeys | None = None
        self.attempts = 0  # attempts started on this connection
        self._attempt: Attempt | None = None
        self._attempt_role: str | None = None
        self._awaiting_answer = False  # server: the engine must answer() or refuse()
        self._awaiting_judgment = False  # server: the driver's proof waits for judge() or refuse()
        self._driver_message = b""  # server: the driver's SPAKE2 message, until answered
        self._driver_proof = b""  # server: the driver's confirmation MAC, until judged
        self._got_server_pake = False  # driver: the server's SPAKE2 message arrived, our proof went
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None
        self.clones = 0  # plans seen: the clone number for data keys
        self.epoch = 0  # resends in this clone: the data stream's epoch

    # --- helpers ---

    def _speaker_ok(self, who: str, ours: bool) -> bool:
        if who == ANY:
            return True
        if who == DRIVES:
            return (self.role == DRIVER) == ours
        if who == REQUESTED:
            return self._request_to_us == ours
        if self.we_are_sender is None:
            return False
        is_sender = self.we_are_sender == ours
        return is_sender if who == SENDER else not is_sender

    def _check_open(self) -> None:
        if self.state is State.BROKEN:
            raise LocalProtocolError("the control connection already failed")

    def _step(self, msg: m.Message, ours: bool) -> None:
        err = LocalProtocolError if ours else RemoteProtocolError
        side = "this side" if ours else "the peer"
        if ours and msg.type in ("error", "cancel") and self.state is State.BROKEN:
            return  # telling the peer why we stop is always allowed
        self._check_open()
        if self.state is State.CLOSED:
            raise err(f"{side} sent {msg.type!r} after the connection was closed")
        if msg.type in ANYTIME:
            if self.state is State.HANDSHAKE and not ANYTIME[msg.type]:
                raise err(f"{side} sent {msg.type!r} before the handshake")
            if ANYTIME[msg.type]:
                self.state = State.CLOSED
            return
        if self.state is State.HANDSHAKE:
            if not isinstance(msg, m.Hello):
                raise err(f"{side} sent {msg.type!r} before hello")
            if (self.our_hello if ours else self.their_hello) is not None:
                raise err(f"{side} sent hello twice")
            if ours:
                self.our_hello = msg
            else:
                self.their_hello = msg
            if self.our_hello and self.their_hello:
                self.state = State.UNPAIRED
            return
        if self.state in (State.UNPAIRED, State.PAIRING):
            raise err(f"{side} sent {msg.type!r} before the pairing")
        if isinstance(msg, m.Done) and not ours and msg.epoch < self.epoch and self.state is State.STREAMING:
            if not self._speaker_ok(SENDER, ours):
                raise err(f"{side} sent 'done' while the connection is {self.state.value}")
            return  # sent before the sender heard of a resend: stale, changes nothing
        rule = TRANSITIONS.get((self.state, msg.type))
        if rule is None or not self._speaker_ok(rule[0], ours):
            raise err(f"{side} sent {msg.type!r} while the connection is {self.state.value}")
        nxt = rule[1]
        if isinstance(msg, m.Resend):
            if msg.epoch != self.epoch + 1:
                raise err(f"{side} asked for epoch {msg.epoch} after epoch {self.epoch}")
            self.epoch = msg.epoch
        elif isinstance(msg, m.Done) and msg.epoch != self.epoch:
            raise err(f"{side} sent 'done' for epoch {msg.epoch}, the stream is in epoch {self.epoch}")
        if msg.type == "plan":
            self.we_are_sender = ours
            self.clones += 1
            self.epoch = 0
        elif msg.type in ("request", "find_images", "measure"):
            self._request_to_us = not ours
        if nxt is State.IDLE:
            self._request_to_us = None
            self.we_are_sender = None
        self.state = nxt

    def _encode(self, msg: m.Message) -> bytes:
        body = m.encode_body(msg)
        if self._sealer is not None:
            body = self._sealer.seal(body, SEAL_AAD)
        elif msg.type not in m.CLEAR_TYPES:
            raise LocalProtocolError(f"this side tried to send {msg.type!r} before the pairing")
        return m.frame_record(body)

    def _hellos(self) -> tuple[bytes, bytes]:
        """(driver's hello, server's hello) as they crossed the wire."""
        assert self._attempt_role is not None
        ours_is_driver = self._attempt_role == DRIVER
        return self._hello_bodies[ours_is_driver], self._hello_bodies[not ours_is_driver]

    def _new_attempt(self, role: str, secret: bytes) -> Attempt:
        self._attempt_role = role
        driver, server = self._hellos()
        return Attempt(
            role, secret, number=self.attempts, driver_hello=driver, server_hello=server, binding=self.binding
        )

    def _end_attempt(self) -> None:
        self._attempt = None
        self._attempt_role = None
        self._awaiting_answer = False
        self._awaiting_judgment = False
        self._driver_message = b""
        self._driver_proof = b""
        self._got_server_pake = False
        self.state = State.UNPAIRED

    def _fail(
        self, reason: str, message: str, *, by_peer: bool, tries_left: int | None = None, new_code: bool = False
    ) -> PairingFailed:
        attempt = self.attempts
        reply = (
            b""
            if by_peer
            else m.encode_message(
                m.PairFailed(
                    attempt=attempt,
                    reason=reason if reason in _WIRE_REASONS else "wrong_code",  # type: ignore[arg-type]
                    message=message[:500],
                    tries_left=tries_left,
                    new_code=new_code,
                )
            )
        )
        self._end_attempt()
        return PairingFailed(attempt, reason, message, by_peer, reply, tries_left, new_code)

    def _seal_from_now(self, keys: SessionKeys, role: str) -> None:
        self.keys, self.role = keys, role
        self._sealer, self._opener = Sealer(keys.send), Opener(keys.receive)
        self.decoder.limit = m.MAX_MESSAGE + pake.TAG_SIZE
        self._attempt = None
        self.state = State.IDLE

    # --- pairing (called by the engine) ---

    def drive(self, secret: bytes, *, rejoin: bool = False) -> bytes:
        """Start a pairing attempt with the code the user typed (or, ``rejoin``, the secret of the
        pairing a lost link ended); the bytes to write."""
        self._check_open()
        if self.state is not State.UNPAIRED:
            raise LocalProtocolError(f"cannot start a pairing while the connection is {self.state.value}")
        self.attempts += 1
        self._attempt = self._new_attempt(DRIVER, secret)
        self.state = State.PAIRING
        return m.encode_message(
            m.Pake(role="driver", attempt=self.attempts, msg=self._attempt.message.hex(), rejoin=rejoin)
        )

    def answer(self, secret: bytes) -> bytes:
        """Answer the peer's attempt with this machine's code: our SPAKE2 message (the proof waits
        for the driver's)."""
        if not self._awaiting_answer:
            raise LocalProtocolError("no pairing attempt waits for an answer")
        self._awaiting_answer = False
        attempt = self._new_attempt(SERVER, secret)
        try:
            attempt.finish(self._driver_message)
        except MalformedPairing as e:
            return self._fail("malformed", e.message, by_peer=False).reply
        self._attempt = attempt
        return m.encode_message(m.Pake(role="server", attempt=self.attempts, msg=attempt.message.hex()))

    def proof_holds(self) -> bool:
        """Does the driver's proof show it has this attempt's key (the right code)? Constant time, no
        change: :meth:`judge` acts on the answer."""
        if not self._awaiting_judgment or self._attempt is None:
            raise LocalProtocolError("no proof waits to be judged")
        return self._attempt.check(self._driver_proof)

    def judge(
        self, holds: bool, *, tries_left: int | None = None, new_code: bool = False
    ) -> tuple[Paired | PairingFailed, bytes]:
        """End the attempt on the driver's proof: paired (our proof goes back) or a wrong code (the
        driver is told ``tries_left`` and ``new_code``, when given)."""
        if not self._awaiting_judgment or self._attempt is None:
            raise LocalProtocolError("no proof waits to be judged")
        if not holds:
            failed = self._fail(
                "wrong_code", "it gave a wrong pairing code", by_peer=False, tries_left=tries_left, new_code=new_code
            )
            return failed, failed.reply
        attempt = self._attempt
        reply = m.encode_message(m.Confirm(attempt=self.attempts, mac=attempt.proof().hex()))
        keys = attempt.keys()
        self._seal_from_now(keys, SERVER)
        self._awaiting_judgment = False
        return Paired(SERVER, keys.fingerprint), reply

    def refuse(self, reason: str, message: str) -> bytes:
        """Turn the peer's attempt away without trying the code ("locked", "no_code")."""
        if not (self._awaiting_answer or self._awaiting_judgment):
            raise LocalProtocolError("no pairing attempt waits for an answer")
        return self._fail(reason, message, by_peer=False).reply

    @property
    def paired(self) -> bool:
        return self.keys is not None

    @property
    def answering(self) -> bool:
        """The peer's request waits for this side's plan or refusal."""
        return self.state is State.REQUESTED and self._request_to_us is True

    # --- pairing messages from the peer ---

    def _on_pairing(self, msg: m.Message) -> Event | None:
        if isinstance(msg, m.PairFailed):
            if self.state is State.PAIRING and msg.attempt == self.attempts:
                return self._fail(
                    msg.reason, msg.message, by_peer=True, tries_left=msg.tries_left, new_code=msg.new_code
                )
            return None  # about an attempt already over (both sides gave up on a conflict)
        if self.state is State.UNPAIRED:
            if isinstance(msg, m.Pake) and msg.role == "driver":
                if msg.attempt != self.attempts + 1:
                    raise RemoteProtocolError(f"pairing attempt {msg.attempt} after {self.attempts}")
                self.attempts += 1
                self._attempt_role = SERVER
                self._driver_message = _unhex(msg.msg)
                self._awaiting_answer = True
                self.state = State.PAIRING
                return PairingRequested(self.attempts, msg.rejoin)
            raise RemoteProtocolError(f"the peer sent {msg.type!r} outside a pairing attempt")
        if self.state is not State.PAIRING:
            raise RemoteProtocolError(f"the peer sent {msg.type!r} while the connection is {self.state.value}")
        if self._attempt_role == DRIVER:
            return self._driver_step(msg)
        return self._server_step(msg)

    def _driver_step(self, msg: m.Message) -> Event | None:
        attempt = self._attempt
        if attempt is None:
            raise RemoteProtocolError(f"the peer sent {msg.type!r} outside a pairing attempt")
        if isinstance(msg, m.Pake):
            if msg.role == "driver":  # both machines drive at once: neither wins this attempt
                return self._fail("conflict", "both machines tried to drive the pairing at once", by_peer=False)
            if msg.attempt != self.attempts or self._got_server_pake:
                raise RemoteProtocolError("the peer answered a pairing attempt twice")
            try:
                attempt.finish(_unhex(msg.msg))
            except MalformedPairing as e:
                return self._fail("malformed", e.message, by_peer=False)
            self._got_server_pake = True
            return Reply(m.encode_message(m.Confirm(attempt=self.attempts, mac=attempt.proof().hex())))
        if isinstance(msg, m.Confirm):
            if msg.attempt != self.attempts or not self._got_server_pake:
                raise RemoteProtocolError("the peer confirmed a pairing it had not answered")
            self._got_server_pake = False
            if not attempt.check(_unhex(msg.mac)):  # it accepted our proof, so it has the key: tampered
                return self._fail(
                    "wrong_code", "the other machine's proof does not match (changed on the way?)", by_peer=False
                )
            keys = attempt.keys()
            self._seal_from_now(keys, DRIVER)
            return Paired(DRIVER, keys.fingerprint)
        raise RemoteProtocolError(f"the peer sent {msg.type!r} during the pairing")

    def _server_step(self, msg: m.Message) -> Event | None:
        attempt = self._attempt
        if self._awaiting_answer or self._awaiting_judgment or attempt is None:
            raise RemoteProtocolError(f"the peer sent {msg.type!r} before its pairing attempt was answered")
        if isinstance(msg, m.Confirm) and msg.attempt == self.attempts:
            self._driver_proof = _unhex(msg.mac)
            self._awaiting_judgment = True
            return ProofArrived(self.attempts)
        raise RemoteProtocolError(f"the peer sent {msg.type!r} during the pairing")

    # --- API ---

    def preamble(self) -> bytes:
        return m.encode_preamble()

    def send(self, msg: m.Message) -> bytes:
        """Check that we may send ``msg`` now; return its bytes."""
        self._step(msg, ours=True)
        data = self._encode(msg)
        if isinstance(msg, m.Hello):
            self._hello_bodies[True] = data[m.MESSAGE_LENGTH.size :]
        return data

    def receive_data(self, data: bytes) -> None:
        self._check_open()
        self.decoder.receive_data(data)

    def next_event(self) -> Event | None:
        """The peer's next message or pairing event, checked against the state table."""
        self._check_open()
        try:
            while (body := self.decoder.next_record()) is not None:
                if self._opener is not None:
                    body = self._opener.open(body, SEAL_AAD)
                msg = m.decode_body(body)
                if msg is None:
                    continue  # an optional message type this version does not know
                if self._opener is None and msg.type not in m.CLEAR_TYPES:
                    raise RemoteProtocolError(f"the peer sent {msg.type!r} before the pairing")
                if msg.type in PAIRING_TYPES:
                    if self._opener is not None:
                        raise RemoteProtocolError(f"the peer sent {msg.type!r} after the pairing")
                    event = self._on_pairing(msg)
                    if event is None:
                        continue
                    return event
                self._step(msg, ours=False)
                if isinstance(msg, m.Hello):
                    self._hello_bodies[False] = body
                return msg
        except ProtocolError:
            self.state = State.BROKEN
            raise
        return None

    def next_message(self) -> m.Message | None:
        """The next message, for callers that expect no pairing events."""
        event = self.next_event()
        if event is not None and not isinstance(event, m.Message):
            raise LocalProtocolError(f"unexpected pairing event {event!r}")
        return event

    @property
    def peer_version(self) -> tuple[int, int] | None:
        return self.decoder.peer_version

    @property
    def shared_caps(self) -> frozenset[str]:
        """The capabilities both hellos list: the features this connection may use."""
        if self.our_hello is None or self.their_hello is None:
            return frozenset()
        return frozenset(self.our_hello.caps) & frozenset(self.their_hello.caps)

    def clone_keys(self, session: str) -> pake.DataKeys:
        """The data keys of the clone whose plan just crossed (numbered by this connection)."""
        if self.keys is None or self.clones == 0:
            raise LocalProtocolError("no paired clone to make keys for")
        return self.keys.data_keys(self.clones - 1, session)
