"""The control link's threads at run time, two real ControlLinks over loopback TCP: the reader hands
the peer's messages over in order, a peer that goes silent is a lost link once the timeout has
passed, the peer's error is raised here as the same error naming the peer, and a lost link is
explained by the reason the peer sent before it closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from recovery.engine.peer import control
from recovery.engine.peer.session import Contact, PeerLink, meet
from recovery.errors import (
    CancelledError,
    Interrupted,
    LinkError,
    LocalProtocolError,
    PairingError,
    RecoveryError,
    RefusedError,
    RemoteProtocolError,
    TargetWriteError,
    VerificationError,
)
from recovery.link import tcp
from recovery.protocol import messages as m
from recovery.protocol.state import State
from tests.helpers import wait_until

Pair = tuple[PeerLink, PeerLink]


@pytest.fixture
def fast_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings every 0.1 s (ask for it before ``paired``: the ping threads read it as they start)."""
    monkeypatch.setattr(control, "PING_INTERVAL", 0.1)


@pytest.fixture
def contacts() -> Iterator[tuple[Contact, Contact]]:
    """(driver-box, server-box) after the hellos, not paired."""
    listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
    met: list[Contact] = []
    server = threading.Thread(
        target=lambda: met.append(meet(listener.accept(10), "receiver", hostname="server-box")), daemon=True
    )
    server.start()
    try:
        met.insert(0, meet(tcp.connect(tcp.Endpoint("127.0.0.1", listener.port)), "sender", hostname="driver-box"))
        server.join(10)
        assert len(met) == 2, "the server side did not say hello"
        yield met[0], met[1]
    finally:
        for contact in met:
            contact.ctl.close()
            contact.conn.abort()
            contact.conn.close()
        listener.close()


def test_the_reader_delivers_the_peers_messages_in_order(paired: Pair) -> None:
    driver, server = paired
    for i in range(50):
        driver.ctl.send(m.Inventory(disks=(m.DiskInfo(path=f"/dev/disk{i}", size=i + 1),)))
    got = []
    for _ in range(50):
        msg = server.ctl.poll(5)
        assert isinstance(msg, m.Inventory)
        got.append(msg.disks[0].path)
    assert got == [f"/dev/disk{i}" for i in range(50)]
    assert server.ctl.poll(0.1) is None  # the pings in between are not messages for the session


def test_a_peer_that_pings_stays_and_a_silent_one_is_a_lost_link_after_the_timeout(
    fast_pings: None, paired: Pair
) -> None:
    driver, server = paired
    server.ctl.timeout = 1.0
    alive_until = time.monotonic() + 3 * server.ctl.timeout
    while time.monotonic() < alive_until:  # three timeouts long: its pings keep it alive
        assert server.ctl.poll(0.1) is None
    driver.ctl.close()  # its ping thread ends: nothing more comes
    silent_from = time.monotonic()
    with pytest.raises(LinkError, match=r"link lost: nothing heard from the peer for \d+ s") as lost:
        while time.monotonic() < silent_from + 10:
            server.ctl.poll(0.1)
    # not before the timeout (less the last ping's interval), and not long after it
    assert server.ctl.timeout - 0.15 <= time.monotonic() - silent_from < server.ctl.timeout + 3, lost.value


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (VerificationError("2 ranges differ", hint="check the cable"), VerificationError),
        (TargetWriteError("the target is full", hint="choose a larger disk"), TargetWriteError),
        (RefusedError("refusing to write /dev/sda: it is mounted"), RefusedError),
        (LocalProtocolError("a message out of turn"), RemoteProtocolError),  # a bug here is the peer's breach there
        (ValueError("a bug"), RecoveryError),
    ],
)
def test_the_peers_error_is_raised_here_as_its_own_naming_the_peer(
    paired: Pair, error: BaseException, raised: type[RecoveryError]
) -> None:
    driver, server = paired
    driver.ctl.report(error)
    with pytest.raises(raised) as got:
        server.ctl.poll(5)
    assert type(got.value) is raised
    assert got.value.peer == "driver-box"
    message = error.message if isinstance(error, RecoveryError) else f"internal error: {error}"
    assert got.value.message == message
    assert got.value.where == f"on driver-box: {message}"
    assert got.value.hint == (error.hint if isinstance(error, RecoveryError) else None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CancelledError("stopped by its user"), "stopped by its user"),
        (KeyboardInterrupt(), "interrupted by the user"),
    ],
)
def test_the_peers_cancel_is_a_cancel_here(paired: Pair, error: BaseException, reason: str) -> None:
    driver, server = paired
    driver.ctl.report(error)
    with pytest.raises(CancelledError, match=f"^the peer cancelled: {reason}$"):
        server.ctl.poll(5)


def test_a_lost_link_the_peer_caused_is_not_reported_back(paired: Pair) -> None:
    """Our own lost link, and an error the peer reported, are not sent back as this side's."""
    driver, server = paired
    server.ctl.report(LinkError("link lost on the data channel"))
    server.ctl.report(TargetWriteError("on the peer", peer="driver-box"))
    server.ctl.send(m.Inventory(disks=()))  # a marker: messages arrive in order
    assert driver.ctl.poll(5) == m.Inventory(disks=())


def test_a_send_after_the_peer_ended_raises_the_peers_reason(paired: Pair) -> None:
    driver, server = paired
    driver.ctl.report(TargetWriteError("the target is full"))
    wait_until(lambda: server.ctl.state.state is State.CLOSED, 5, "the server to read the peer's error")
    with pytest.raises(TargetWriteError, match="the target is full") as got:
        server.ctl.send(m.Inventory(disks=()))
    assert got.value.peer == "driver-box"


def test_a_cancel_here_interrupts_the_wait(paired: Pair) -> None:
    _, server = paired
    server.ctl.cancel.set()
    with pytest.raises(Interrupted):
        server.ctl.poll(5)


def test_a_lost_link_is_explained_by_the_reason_the_peer_sent_before_closing(paired: Pair) -> None:
    driver, server = paired
    driver.ctl.report(TargetWriteError("the target is full", hint="choose a larger disk"))
    driver.ctl.last_words(0.5)
    driver.conn.abort()
    lost = LinkError("link lost on the data channel: Connection reset by peer")
    reason = server.ctl.explain(lost)
    assert isinstance(reason, TargetWriteError)
    assert (reason.peer, reason.message, reason.hint) == ("driver-box", "the target is full", "choose a larger disk")


def test_a_lost_link_after_the_peers_cancel_is_the_cancel(paired: Pair) -> None:
    driver, server = paired
    driver.ctl.report(CancelledError("its user quit"))
    driver.conn.abort()
    reason = server.ctl.explain(LinkError("link lost"))
    assert isinstance(reason, CancelledError) and reason.message == "the peer cancelled: its user quit"


def test_an_error_of_this_sides_own_is_not_explained_away(paired: Pair) -> None:
    driver, server = paired
    driver.ctl.report(TargetWriteError("the peer's"))
    own = VerificationError("this side's")
    assert server.ctl.explain(own) is own
    with pytest.raises(TargetWriteError, match="the peer's"):  # still there for the session to read
        server.ctl.poll(5)


def test_a_peer_that_closed_without_a_word_leaves_the_lost_link_as_it_is(paired: Pair) -> None:
    driver, server = paired
    driver.conn.abort()
    lost = LinkError("link lost on the data channel")
    started = time.monotonic()
    assert server.ctl.explain(lost, wait=20) is lost
    assert time.monotonic() - started < 10  # its reader saw the close: no need to wait the whole time


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("verify_failed", PairingError),
        ("integrity", PairingError),
        ("refused", RefusedError),
        ("pairing", PairingError),
    ],
)
def test_an_unpaired_peer_may_only_say_why_it_will_not_pair(
    contacts: tuple[Contact, Contact], code: str, raised: type[RecoveryError]
) -> None:
    """It cannot make this side report a verification failure or the like: that is only a failed pairing."""
    stranger, server = contacts
    stranger.ctl.send(m.Error(code=code, message="what it claims"))
    with pytest.raises(raised) as got:
        server.ctl.poll_event(5)
    assert type(got.value) is raised
    if code in control.UNPAIRED_CODES:
        assert got.value.peer == "driver-box" and got.value.message == "what it claims"
    else:
        assert got.value.peer is None and got.value.message == "peer (not paired): what it claims"
