"""A program's ways of meeting its peer, over real loopback TCP: the listener is made once and kept
from one lobby to the next (the port people were told stays right), a busy port is tried again until
it is free, and a peer at a given address is reached and held until a code is typed here."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from recovery.engine.peer import meeting as meeting_module
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.lobby import Lobby
from recovery.engine.peer.meeting import Meeting, Ways
from recovery.engine.peer.seen import DRIVABLE
from recovery.engine.peer.session import PeerLink, handshake
from recovery.errors import LinkError
from recovery.link import tcp
from recovery.link.spec import LinkSpec
from tests.helpers import wait_until

CODE = "meeting-test-code"
LOCAL = tcp.Endpoint("127.0.0.1", 0)


class Links:
    """Paired links a test made, closed at its end."""

    def __init__(self) -> None:
        self.made: list[PeerLink] = []

    def keep(self, link: PeerLink) -> PeerLink:
        self.made.append(link)
        return link

    def drive(self, port: int) -> PeerLink:
        """Pair with the receiver listening on ``port`` as a sender called driver-box."""
        return self.keep(
            handshake(tcp.connect(tcp.Endpoint("127.0.0.1", port)), "sender", code=CODE, hostname="driver-box")
        )

    def close(self) -> None:
        for link in self.made:
            link.close()
            link.conn.abort()
            link.conn.close()


@pytest.fixture
def links() -> Iterator[Links]:
    made = Links()
    yield made
    made.close()


def test_the_ways_say_whether_there_is_any() -> None:
    assert Ways().empty
    assert not Ways(listen=LOCAL).empty and not Ways(connect=LOCAL).empty
    assert not Ways(cable=LinkSpec("tbstream")).empty and not Ways(other=LinkSpec("stdio")).empty


def test_the_listener_is_made_once_and_kept_from_one_lobby_to_the_next(links: Links) -> None:
    lines: list[tuple[str, str]] = []
    where: list[tuple[str, str, int]] = []
    meeting = Meeting(
        Ways(listen=LOCAL),
        status=lambda way, text: lines.append((way, text)),
        listening=lambda way, host, port: where.append((way, host, port)),
    )
    try:
        meeting.listen_now()
        [(way, host, port)] = where
        assert (way, host) == ("tcp", "127.0.0.1") and port > 0
        assert lines == [("tcp", f"listening on port {port} of 127.0.0.1 only")]
        for _ in range(2):  # a wizard pairs, clones, and waits again: on the same port (asked for as 0)
            lobby = Lobby(CodeGuard(CODE), "receiver")
            meeting.feed(lobby)
            driver = links.drive(port)
            server = links.keep(lobby.wait())
            assert server.theirs.host.hostname == "driver-box" and server.fingerprint == driver.fingerprint
            lobby.close()  # the next lobby is fed at once: a connection a done lobby took is given back
        assert len(where) == 1
    finally:
        meeting.close()
    assert lines[-1] == ("tcp", "not listening")
    with pytest.raises(LinkError, match="cannot connect"):
        tcp.connect(tcp.Endpoint("127.0.0.1", port), timeout=5)


def test_making_the_listener_now_fails_at_once_on_a_busy_port() -> None:
    with tcp.Listener(LOCAL) as blocker:
        meeting = Meeting(Ways(listen=tcp.Endpoint("127.0.0.1", blocker.port)))
        with pytest.raises(LinkError, match="cannot listen"):
            meeting.listen_now()
        meeting.close()


def test_a_busy_port_is_tried_again_until_it_is_free(monkeypatch: pytest.MonkeyPatch, links: Links) -> None:
    monkeypatch.setattr(meeting_module, "LISTEN_RETRY", 0.05)
    blocker = tcp.Listener(LOCAL)
    port = blocker.port
    lines: list[str] = []
    meeting = Meeting(Ways(listen=tcp.Endpoint("127.0.0.1", port)), status=lambda way, text: lines.append(text))
    lobby = Lobby(CodeGuard(CODE), "receiver")
    try:
        meeting.feed(lobby)
        wait_until(lambda: lines, 10, "a status line")
        assert lines[0].startswith(f"cannot listen: cannot listen on 127.0.0.1:{port}")
        assert lines[0].endswith("; trying again...")
        blocker.close()
        listening = f"listening on port {port} of 127.0.0.1 only"
        wait_until(lambda: listening in lines, 10, "the meeting to listen once the port is free")
        assert lines[-1] == listening
        links.drive(port)
        assert links.keep(lobby.wait()).theirs.host.hostname == "driver-box"
    finally:
        blocker.close()
        lobby.close()
        meeting.close()


@pytest.mark.parametrize("given", ["ways", "feed"])
def test_the_peer_at_the_given_address_is_held_until_a_code_is_typed_here(links: Links, given: str) -> None:
    """A wizard told where the agent is connects to it; the agent shows a code; a person types it here."""
    with tcp.Listener(LOCAL) as agent_side:
        meeting = Meeting(Ways(connect=agent_side.endpoint if given == "ways" else None))
        lobby = Lobby(None, "wizard", drives=DRIVABLE)
        served: list[PeerLink] = []
        try:
            meeting.feed(lobby, connect=agent_side.endpoint if given == "feed" else None)
            conn = agent_side.accept(10)
            agent = threading.Thread(
                target=lambda: served.append(handshake(conn, "agent", guard=CodeGuard(CODE), hostname="agent-box")),
                daemon=True,
            )
            agent.start()
            wait_until(
                lambda: [s.hostname for s in lobby.seen if s.drivable and s.contact] == ["agent-box"],
                10,
                "the agent to be held, ready to be driven",
            )
            [held] = lobby.seen
            assert held.ours and held.peer == str(agent_side.endpoint)
            assert lobby.drive(CODE)
            wizard = links.keep(lobby.wait())
            agent.join(10)
            [agent_link] = [links.keep(link) for link in served]
            assert (wizard.role, wizard.theirs.host.hostname) == ("driver", "agent-box")
            assert agent_link.role == "server" and agent_link.fingerprint == wizard.fingerprint
        finally:
            lobby.close()
            meeting.close()
