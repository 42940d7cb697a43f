"""The control connection's state machine (pure, no I/O).

Theory of operation
-------------------
Both sides send a preamble and a ``hello``. Then either side may propose a
clone: it sends a ``plan`` and becomes the *sender*; or it sends a
``request`` asking the peer to send one of its disks, and the peer answers
with a ``plan`` (becoming the sender) or a ``refuse``. The receiver answers a
plan with ``accept`` or ``refuse``. While frames stream on the data channel
the receiver sends ``ack`` (durable frames) and both may send ``progress``;
the sender ends with ``done``, the receiver with ``summary``, after which the
connection is idle again. ``ping`` is allowed at any time after the
handshake; ``error`` and ``cancel`` close the connection from any state.

Every legal step is a row of :data:`TRANSITIONS`; anything else is a
protocol error, raised as :class:`LocalProtocolError` when this side tries
it and :class:`RemoteProtocolError` when the peer does. After an error the
connection refuses every further call.
"""

from __future__ import annotations

import enum

from recovery.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from recovery.protocol import messages as m


class State(enum.Enum):
    HANDSHAKE = "handshake"  # waiting for both hellos
    IDLE = "idle"
    REQUESTED = "requested"  # a request awaits the peer's plan or refusal
    PLANNED = "planned"  # a plan awaits the receiver's accept or refusal
    STREAMING = "streaming"
    FINISHING = "finishing"  # done sent; the receiver verifies and summarises
    CLOSED = "closed"  # after error or cancel
    BROKEN = "broken"  # after a protocol violation


# Who may send a message, relative to the current clone.
ANY = "any"
SENDER = "sender"  # the side that sent the plan
RECEIVER = "receiver"
REQUESTED = "requested"  # the side a request was sent to

# (state, message type) -> (who may send it, next state)
TRANSITIONS: dict[tuple[State, str], tuple[str, State]] = {
    (State.IDLE, "plan"): (ANY, State.PLANNED),
    (State.IDLE, "request"): (ANY, State.REQUESTED),
    (State.REQUESTED, "plan"): (REQUESTED, State.PLANNED),
    (State.REQUESTED, "refuse"): (REQUESTED, State.IDLE),
    (State.PLANNED, "accept"): (RECEIVER, State.STREAMING),
    (State.PLANNED, "refuse"): (RECEIVER, State.IDLE),
    (State.PLANNED, "progress"): (ANY, State.PLANNED),
    (State.STREAMING, "ack"): (RECEIVER, State.STREAMING),
    (State.STREAMING, "progress"): (ANY, State.STREAMING),
    (State.STREAMING, "done"): (SENDER, State.FINISHING),
    (State.FINISHING, "ack"): (RECEIVER, State.FINISHING),
    (State.FINISHING, "progress"): (ANY, State.FINISHING),
    (State.FINISHING, "summary"): (RECEIVER, State.IDLE),
}
# Allowed in every state after the handshake, and before it for error/cancel.
ANYTIME = {"ping": False, "error": True, "cancel": True}  # type -> closes?


class ControlConnection:
    """Tracks one control channel: encodes what we send, decodes what we get.

    ``send(msg)`` returns the bytes to write; ``receive_data(b)`` then
    ``next_message()`` yields checked messages from the peer.
    """

    def __init__(self) -> None:
        self.state = State.HANDSHAKE
        self.decoder = m.ControlDecoder()
        self.our_hello: m.Hello | None = None
        self.their_hello: m.Hello | None = None
        self.we_are_sender: bool | None = None  # set by a plan
        self._request_to_us: bool | None = None

    # --- helpers ---

    def _speaker_ok(self, who: str, ours: bool, kind: str) -> bool:
        if who == ANY:
            return True
        if who == REQUESTED:
            return self._request_to_us == ours
        if self.we_are_sender is None:
            return False
        is_sender = self.we_are_sender == ours
        return is_sender if who == SENDER else not is_sender

    def _step(self, msg: m.Message, ours: bool) -> None:
        err = LocalProtocolError if ours else RemoteProtocolError
        side = "this side" if ours else "the peer"
        if self.state is State.BROKEN:
            raise LocalProtocolError("the control connection already failed")
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
                self.state = State.IDLE
            return
        rule = TRANSITIONS.get((self.state, msg.type))
        if rule is None or not self._speaker_ok(rule[0], ours, msg.type):
            raise err(f"{side} sent {msg.type!r} while the connection is {self.state.value}")
        nxt = rule[1]
        if msg.type == "plan":
            self.we_are_sender = ours
        elif msg.type == "request":
            self._request_to_us = not ours
        if nxt is State.IDLE:
            self._request_to_us = None
            self.we_are_sender = None
        self.state = nxt

    # --- API ---

    def preamble(self) -> bytes:
        return m.encode_preamble()

    def send(self, msg: m.Message) -> bytes:
        """Check that we may send ``msg`` now; return its bytes."""
        self._step(msg, ours=True)
        return m.encode_message(msg)

    def receive_data(self, data: bytes) -> None:
        if self.state is State.BROKEN:
            raise LocalProtocolError("the control connection already failed")
        self.decoder.receive_data(data)

    def next_message(self) -> m.Message | None:
        """The peer's next message, checked against the state table."""
        if self.state is State.BROKEN:
            raise LocalProtocolError("the control connection already failed")
        try:
            msg = self.decoder.next_message()
            if msg is not None:
                self._step(msg, ours=False)
        except ProtocolError:
            self.state = State.BROKEN
            raise
        return msg

    @property
    def peer_version(self) -> tuple[int, int] | None:
        return self.decoder.peer_version
