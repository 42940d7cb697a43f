"""The control state machine: the pairing (right code, wrong code, both driving, a
tampering relay), sealed messages after it, and the clone table; anything else is
refused and names who broke the protocol."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.errors import LocalProtocolError, RemoteProtocolError
from recovery.protocol import codes
from recovery.protocol import messages as m
from recovery.protocol.pake import SealError
from recovery.protocol.state import (
    ControlConnection,
    Paired,
    PairingFailed,
    PairingRequested,
    ProofArrived,
    Reply,
    State,
)
from tests.protocol.test_messages import IDENTITY, SAMPLES

PLAN = next(s for s in SAMPLES if isinstance(s, m.Plan))
HELLO = next(s for s in SAMPLES if isinstance(s, m.Hello))
SUMMARY = next(s for s in SAMPLES if isinstance(s, m.Summary))
CODE = "4821-0937"


def hellos(binding: bytes = b"link") -> tuple[ControlConnection, ControlConnection]:
    a, b = ControlConnection(binding), ControlConnection(binding)
    for x, y in ((a, b), (b, a)):
        y.receive_data(x.preamble() + x.send(HELLO))
    for c in (a, b):
        assert c.next_event() == HELLO
        assert c.state is State.UNPAIRED
    return a, b


def attempt(driver: ControlConnection, server: ControlConnection, typed: str, shown: str) -> tuple[object, object]:
    """One attempt, bytes carried both ways until both sides know the outcome; the server's guard
    lets every proof be checked."""
    server.receive_data(driver.drive(codes.secret(typed)))
    asked = server.next_event()
    assert isinstance(asked, PairingRequested) and asked.attempt == driver.attempts
    driver.receive_data(server.answer(codes.secret(shown)))
    proof = driver.next_event()  # the driver proves first
    if isinstance(proof, PairingFailed):
        return proof, None
    assert isinstance(proof, Reply)
    server.receive_data(proof.data)
    arrived = server.next_event()
    assert isinstance(arrived, ProofArrived)
    outcome_s, reply = server.judge(server.proof_holds())
    driver.receive_data(reply)
    outcome_d = driver.next_event()
    assert isinstance(outcome_d, (Paired, PairingFailed))
    return outcome_d, outcome_s


def paired() -> tuple[ControlConnection, ControlConnection]:
    a, b = hellos()
    da, db = attempt(a, b, CODE, CODE)
    assert isinstance(da, Paired) and isinstance(db, Paired)
    return a, b


def deliver(src: ControlConnection, dst: ControlConnection, msg: m.Message) -> bytes:
    data = src.send(msg)
    dst.receive_data(data)
    assert dst.next_event() == msg
    return data


def test_the_right_code_pairs_and_every_later_message_is_sealed() -> None:
    a, b = hellos()
    da, db = attempt(a, b, " 4821 0937 ", CODE)  # typed with spaces: the same code
    assert isinstance(da, Paired) and isinstance(db, Paired)
    assert (da.role, db.role) == ("driver", "server") and da.fingerprint == db.fingerprint
    assert a.state is b.state is State.IDLE
    wire = deliver(b, a, m.Inventory(disks=()))
    assert b"inventory" not in wire  # sealed: the JSON does not show
    deliver(a, b, PLAN)
    assert a.clone_keys(PLAN.session) == b.clone_keys(PLAN.session)


def test_a_wrong_code_fails_on_both_sides_and_a_new_attempt_may_follow() -> None:
    a, b = hellos()
    da, db = attempt(a, b, "1111-2222", CODE)
    assert isinstance(db, PairingFailed) and db.reason == "wrong_code" and not db.by_peer  # the server judged
    assert isinstance(da, PairingFailed) and da.reason == "wrong_code" and da.by_peer
    assert a.state is b.state is State.UNPAIRED and not a.paired and not b.paired
    with pytest.raises(LocalProtocolError, match="before the pairing"):
        a.send(PLAN)
    da, db = attempt(a, b, CODE, CODE)
    assert isinstance(da, Paired) and isinstance(db, Paired) and a.attempts == b.attempts == 2


def test_both_sides_driving_at_once_fails_that_attempt_only() -> None:
    a, b = hellos()
    to_b, to_a = a.drive(codes.secret(CODE)), b.drive(codes.secret(CODE))
    a.receive_data(to_a)
    b.receive_data(to_b)
    fa, fb = a.next_event(), b.next_event()
    assert isinstance(fa, PairingFailed) and fa.reason == "conflict"
    assert isinstance(fb, PairingFailed) and fb.reason == "conflict"
    a.receive_data(fb.reply)
    b.receive_data(fa.reply)
    assert a.next_event() is None and b.next_event() is None  # the other side's give-up is old news
    da, db = attempt(a, b, CODE, CODE)
    assert isinstance(da, Paired) and isinstance(db, Paired)


def test_an_abandoned_attempt_reveals_nothing_to_the_driver() -> None:
    """The server proves only after the driver did: a driver that stops after the server's
    message has nothing to test a guess against (and the server need not count it)."""
    a, b = hellos()
    b.receive_data(a.drive(codes.secret("1111-2222")))
    assert isinstance(b.next_event(), PairingRequested)
    answer = b.answer(codes.secret(CODE))
    assert b"confirm" not in answer and b'"pake"' in answer


def test_a_refused_attempt_says_why() -> None:
    a, b = hellos()
    b.receive_data(a.drive(codes.secret(CODE)))
    assert isinstance(b.next_event(), PairingRequested)
    a.receive_data(b.refuse("locked", "try again in 4 s"))
    failed = a.next_event()
    assert isinstance(failed, PairingFailed) and failed.by_peer and failed.reason == "locked"
    assert "4 s" in failed.message and a.state is State.UNPAIRED


@pytest.mark.parametrize("part", ["driver hello", "server hello", "binding"])
def test_a_relay_that_changes_the_transcript_gets_no_pairing(part: str) -> None:
    """Even knowing the code, a man in the middle that changes what one side saw is caught."""
    a = ControlConnection(b"link A")
    b = ControlConnection(b"link A" if part != "binding" else b"link B")
    other = m.encode_preamble() + m.encode_message(m.Hello(host=HELLO.host, role="wizard", nonce="11" * 16))
    from_a, from_b = a.preamble() + a.send(HELLO), b.preamble() + b.send(HELLO)
    b.receive_data(other if part == "driver hello" else from_a)
    a.receive_data(other if part == "server hello" else from_b)
    a.next_event()
    b.next_event()
    da, db = attempt(a, b, CODE, CODE)
    assert isinstance(da, PairingFailed) and isinstance(db, PairingFailed)


def test_a_sealed_record_that_was_changed_replayed_or_dropped_is_refused() -> None:
    a, b = paired()
    first = a.send(m.Request(source="/dev/sda", mode="used", level="auto"))
    changed = bytearray(first)
    changed[-1] ^= 1
    b.receive_data(bytes(changed))
    with pytest.raises(SealError):
        b.next_event()
    assert b.state is State.BROKEN
    a, b = paired()
    ping = a.send(m.Ping())
    b.receive_data(ping + ping)  # replayed
    assert b.next_event() == m.Ping()
    with pytest.raises(SealError):
        b.next_event()
    a, b = paired()
    a.send(m.Ping())  # lost on the way
    b.receive_data(a.send(m.Ping()))
    with pytest.raises(SealError):
        b.next_event()


def test_clear_messages_after_the_pairing_and_pairing_messages_before_a_pake_are_refused() -> None:
    _a, b = paired()
    b.receive_data(m.encode_message(m.Ping()))
    with pytest.raises(SealError):
        b.next_event()
    _a, b = hellos()
    b.receive_data(m.encode_message(m.Confirm(attempt=1, mac="00" * 32)))
    with pytest.raises(RemoteProtocolError, match="outside a pairing attempt"):
        b.next_event()
    _a, b = hellos()
    b.receive_data(m.encode_message(PLAN))
    with pytest.raises(RemoteProtocolError, match="before the pairing"):
        b.next_event()


def test_a_whole_clone_then_another() -> None:
    a, b = paired()
    for _ in range(2):
        deliver(a, b, PLAN)
        deliver(b, a, m.Accept(target=IDENTITY))
        deliver(b, a, m.Ack(seq=1, bytes=1))
        deliver(a, b, m.Progress(phase="transfer", done=1, total=2))
        deliver(a, b, m.Done(frames=1, bytes=1, list_digest="00"))
        deliver(b, a, m.Progress(phase="verify", done=1, total=2))
        deliver(b, a, SUMMARY)
        assert a.state is b.state is State.IDLE
    assert a.clones == b.clones == 2


def test_only_the_driver_proposes_a_clone() -> None:
    _a, b = paired()
    with pytest.raises(LocalProtocolError, match="this side sent 'plan'"):
        b.send(PLAN)
    with pytest.raises(LocalProtocolError, match="this side sent 'request'"):
        b.send(m.Request(source="/dev/sda", mode="used", level="auto"))


def test_request_then_plan_from_the_requested_side() -> None:
    a, b = paired()
    deliver(a, b, m.Request(source="/dev/sda", mode="used", level="auto"))
    with pytest.raises(LocalProtocolError):
        a.send(PLAN)  # the requester may not answer its own request
    deliver(b, a, PLAN)
    assert b.we_are_sender and not a.we_are_sender
    deliver(a, b, m.Accept(target=IDENTITY))


def test_only_the_driver_asks_for_images_and_only_the_peer_answers_once() -> None:
    a, b = paired()
    with pytest.raises(LocalProtocolError, match="this side sent 'find_images'"):
        b.send(m.FindImages(folder="/media/usb"))
    deliver(a, b, m.FindImages(folder="/media/usb"))
    with pytest.raises(LocalProtocolError):
        a.send(m.Images(folder="/media/usb"))  # the asker may not answer itself
    with pytest.raises(LocalProtocolError):
        b.send(PLAN)  # nothing else crosses before the answer
    deliver(b, a, m.Images(folder="/media/usb", refused="not a folder"))
    deliver(a, b, PLAN)  # idle again: the driver may start a clone


def test_only_the_driver_measures_the_target_and_only_the_peer_answers_once() -> None:
    a, b = paired()
    with pytest.raises(LocalProtocolError, match="this side sent 'measure'"):
        b.send(m.Measure())
    deliver(a, b, m.Measure())
    assert a.state is b.state is State.MEASURING
    with pytest.raises(LocalProtocolError):
        a.send(m.Measured(target=IDENTITY))  # the asker may not answer itself
    with pytest.raises(LocalProtocolError):
        a.send(PLAN)  # the plan waits for the answer
    deliver(b, a, m.Measured(target=IDENTITY))
    with pytest.raises(LocalProtocolError):
        b.send(m.Measured(target=IDENTITY))  # answered once
    deliver(a, b, PLAN)  # idle again: the plan follows


def test_receiver_may_not_send_done() -> None:
    a, b = paired()
    deliver(a, b, PLAN)
    deliver(b, a, m.Accept(target=IDENTITY))
    with pytest.raises(LocalProtocolError, match="this side sent 'done'"):
        b.send(m.Done(frames=1, bytes=1, list_digest="00"))


def test_peer_breaking_the_order_is_a_remote_error_and_breaks_the_connection() -> None:
    a, b = paired()
    b.receive_data(a._encode(m.Accept(target=IDENTITY)))  # a peer that ignores its own state table
    with pytest.raises(RemoteProtocolError, match="the peer sent 'accept' while the connection is idle"):
        b.next_event()
    assert b.state is State.BROKEN
    with pytest.raises(LocalProtocolError):
        b.next_event()


def test_bye_then_bye_closes() -> None:
    a, b = paired()
    deliver(a, b, m.Bye(reason="done"))
    assert a.state is b.state is State.ENDING
    deliver(b, a, m.Bye())
    assert a.state is b.state is State.CLOSED


def test_only_hello_before_the_handshake() -> None:
    a = ControlConnection()
    a.receive_data(ControlConnection().preamble() + m.encode_message(m.Ping()))
    with pytest.raises(RemoteProtocolError, match="before the handshake"):
        a.next_event()


def test_error_closes_from_any_state() -> None:
    a, b = paired()
    deliver(a, b, PLAN)
    deliver(b, a, m.Error(code="refused", message="x"))
    assert a.state is State.CLOSED
    a.receive_data(b._encode(m.Ping()))  # whatever the peer sends next
    with pytest.raises(RemoteProtocolError, match="after the connection was closed"):
        a.next_event()


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_random_bytes_after_the_hellos_only_ever_raise_protocol_errors(data: bytes) -> None:
    _a, b = hellos()
    b.receive_data(data)
    try:
        while b.next_event() is not None:
            pass
    except RemoteProtocolError:
        pass


@settings(max_examples=200)
@given(
    st.sampled_from(["pake", "confirm", "pair_failed"]),
    st.dictionaries(
        st.sampled_from(["role", "attempt", "msg", "mac", "reason", "message"]),
        st.one_of(st.integers(-5, 5), st.text(max_size=80), st.sampled_from(["driver", "server", "41" * 33])),
        max_size=6,
    ),
)
def test_malformed_pairing_messages_only_raise_protocol_errors(kind: str, fields: dict[str, object]) -> None:
    import json

    _a, b = hellos()
    b.receive_data(m.frame_record(json.dumps({**fields, "type": kind}).encode()))
    try:
        event = b.next_event()
        if isinstance(event, PairingRequested):
            b.answer(codes.secret(CODE))
    except RemoteProtocolError:
        pass


def streaming() -> tuple[ControlConnection, ControlConnection]:
    """a sends, b receives; the plan accepted."""
    a, b = paired()
    deliver(a, b, PLAN)
    deliver(b, a, m.Accept(target=IDENTITY))
    return a, b


def test_a_resend_crossing_the_senders_done_makes_that_done_stale() -> None:
    a, b = streaming()
    done = a.send(m.Done(frames=3, bytes=10, list_digest="ef" * 32))  # on its way ...
    resend = b.send(m.Resend(seq=1, epoch=1, reason="damaged"))  # ... while b asks for frame 1 again
    assert a.state is State.FINISHING and b.state is State.STREAMING
    b.receive_data(done)
    assert isinstance(b.next_event(), m.Done) and b.state is State.STREAMING  # stale: changes nothing
    a.receive_data(resend)
    assert a.next_event() == m.Resend(seq=1, epoch=1, reason="damaged") and a.state is State.STREAMING
    deliver(a, b, m.Done(frames=3, bytes=10, list_digest="ef" * 32, epoch=1))
    assert a.state is b.state is State.FINISHING
    deliver(b, a, m.Resend(seq=2, epoch=2))  # found while verifying what finished: streaming again
    assert a.state is b.state is State.STREAMING
    with pytest.raises(LocalProtocolError, match="epoch 1"):
        a.send(m.Done(frames=3, bytes=10, list_digest="ef" * 32, epoch=1))


def test_epochs_go_up_by_one_and_only_the_receiver_asks() -> None:
    _a, b = streaming()
    with pytest.raises(LocalProtocolError, match="epoch 2 after epoch 0"):
        b.send(m.Resend(seq=0, epoch=2))
    a2, _b2 = streaming()
    with pytest.raises(LocalProtocolError, match="this side sent 'resend'"):
        a2.send(m.Resend(seq=0, epoch=1))


def test_a_resume_offer_then_digests_and_start() -> None:
    a, b = paired()
    deliver(a, b, PLAN)
    deliver(b, a, m.Accept(target=IDENTITY, resume=m.ResumeOffer(seq=2, bytes=8192, since="then")))
    deliver(b, a, m.Digests(first=0, digests="ab" * 64))
    deliver(a, b, m.Start(seq=1))
    with pytest.raises(LocalProtocolError, match="this side sent 'digests'"):
        a.send(m.Digests(first=0, digests=""))
    assert a.state is b.state is State.STREAMING


def test_new_message_types_say_they_are_optional_so_an_older_peer_skips_them() -> None:
    for msg in (
        m.Digests(first=0, digests=""),
        m.Start(seq=0),
        m.Resend(seq=0, epoch=1),
        m.FindImages(folder="/media/usb"),
        m.Images(),
        m.Measure(),
        m.Measured(),
    ):
        body = m.encode_body(msg)
        assert b'"optional":true' in body
        assert m.decode_body(body) == msg
    assert b"optional" not in m.encode_body(m.Ping())


def test_an_images_passphrase_crosses_only_sealed() -> None:
    request = m.Request(source="/x/a.img", mode="used", level="auto", image=True, passphrase="correct horse")
    a, b = hellos()
    assert not a.paired
    with pytest.raises(LocalProtocolError, match="before the pairing"):
        a.send(request)  # never in the clear: a request cannot be sent before the pairing, on any link
    a, b = paired()
    assert a.paired
    wire = deliver(a, b, request)
    assert b"correct horse" not in wire and b"passphrase" not in wire
