"""The control state table: legal conversations pass, anything else is refused
and names who broke the protocol."""

from __future__ import annotations

import pytest

from recovery.errors import LocalProtocolError, RemoteProtocolError
from recovery.protocol import messages as m
from recovery.protocol.state import ControlConnection, State
from tests.protocol.test_messages import IDENTITY, SAMPLES

PLAN = next(s for s in SAMPLES if isinstance(s, m.Plan))
HELLO = next(s for s in SAMPLES if isinstance(s, m.Hello))
SUMMARY = next(s for s in SAMPLES if isinstance(s, m.Summary))


def pair() -> tuple[ControlConnection, ControlConnection]:
    a, b = ControlConnection(), ControlConnection()
    for x, y in ((a, b), (b, a)):
        y.receive_data(x.preamble() + x.send(HELLO))
    for c in (a, b):
        assert c.next_message() == HELLO
        assert c.state is State.IDLE
    return a, b


def deliver(src: ControlConnection, dst: ControlConnection, msg: m.Message) -> None:
    dst.receive_data(src.send(msg))
    assert dst.next_message() == msg


def test_a_whole_clone_then_another() -> None:
    a, b = pair()
    for _ in range(2):
        deliver(a, b, PLAN)
        deliver(b, a, m.Accept(target=IDENTITY))
        deliver(b, a, m.Ack(seq=1, bytes=1))
        deliver(a, b, m.Progress(phase="transfer", done=1, total=2))
        deliver(a, b, m.Done(frames=1, bytes=1, list_digest="00"))
        deliver(b, a, m.Progress(phase="verify", done=1, total=2))
        deliver(b, a, SUMMARY)
        assert a.state is b.state is State.IDLE


def test_request_then_plan_from_the_requested_side() -> None:
    a, b = pair()
    deliver(a, b, m.Request(source="/dev/sda", mode="used", level="auto"))
    with pytest.raises(LocalProtocolError):
        a.send(PLAN)  # the requester may not answer its own request
    deliver(b, a, PLAN)
    assert b.we_are_sender and not a.we_are_sender
    deliver(a, b, m.Accept(target=IDENTITY))


def test_receiver_may_not_send_done() -> None:
    a, b = pair()
    deliver(a, b, PLAN)
    deliver(b, a, m.Accept(target=IDENTITY))
    with pytest.raises(LocalProtocolError, match="this side sent 'done'"):
        b.send(m.Done(frames=1, bytes=1, list_digest="00"))


def test_peer_breaking_the_order_is_a_remote_error_and_breaks_the_connection() -> None:
    _a, b = pair()
    b.receive_data(m.encode_message(m.Accept(target=IDENTITY)))
    with pytest.raises(RemoteProtocolError, match="the peer sent 'accept' while the connection is idle"):
        b.next_message()
    assert b.state is State.BROKEN
    with pytest.raises(LocalProtocolError):
        b.next_message()


def test_only_hello_before_the_handshake() -> None:
    a = ControlConnection()
    a.receive_data(ControlConnection().preamble() + m.encode_message(m.Ping()))
    with pytest.raises(RemoteProtocolError, match="before the handshake"):
        a.next_message()


def test_error_closes_from_any_state() -> None:
    a, b = pair()
    deliver(a, b, PLAN)
    deliver(b, a, m.Error(code="refused", message="x"))
    assert a.state is State.CLOSED
    with pytest.raises(RemoteProtocolError):
        a.receive_data(m.encode_message(m.Ping()))
        a.next_message()
