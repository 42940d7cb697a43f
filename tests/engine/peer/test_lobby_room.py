"""The lobby's table of connections under pressure, with real TCP connections from several loopback
origins (127.0.0.2, .3, ...): one origin holds at most MAX_PER_ORIGIN places and a full table
MAX_CONTACTS. An origin whose share is full makes room from its own connections older than PROTECTED;
a full table makes room from the origin that holds the most places, its oldest first, whatever it is
doing; one from an origin that must wait goes first, one this side reached itself never; a newcomer
from an origin that must wait gets no place."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from recovery.engine.peer import lobby as lobby_module
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.lobby import MAX_CONTACTS, MAX_PER_ORIGIN, Lobby
from recovery.engine.peer.seen import Seen
from recovery.engine.peer.session import make_hello, meet
from recovery.errors import PairingError
from recovery.link import tcp
from recovery.link.base import Connection, FdChannel
from recovery.link.opening import _TcpSource
from recovery.protocol import codes
from recovery.protocol.state import ControlConnection, State
from tests.helpers import wait_until

CODE = "lobby-room-code"
ORIGINS = tuple(f"127.0.0.{i}" for i in range(2, 2 + MAX_CONTACTS // MAX_PER_ORIGIN))  # enough to fill it
NEWCOMER = "127.0.0.99"


def name_of(conn: Connection) -> str:
    """How the lobby names ``conn`` (our end of its control stream): ``Seen.peer``."""
    assert isinstance(conn.control, FdChannel)
    with socket.socket(fileno=os.dup(conn.control.read_fd)) as sock:
        host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def ended(conn: Connection) -> bool:
    """Has the lobby ended ``conn``? Reads (and drops) what it said, without waiting."""
    assert isinstance(conn.control, FdChannel)
    while True:
        try:
            if not os.read(conn.control.read_fd, 65536):
                return True
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True


class Table:
    """A lobby serving a loopback port, and the connections the test made to it."""

    def __init__(self, guard: CodeGuard | None = None) -> None:
        self.listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
        self.lobby = Lobby(guard or CodeGuard(CODE), "receiver")
        self.lobby.serve(_TcpSource(self.listener))
        self.conns: list[Connection] = []

    def connect(self, origin: str) -> Connection:
        conn = tcp.connect(tcp.Endpoint("127.0.0.1", self.listener.port), source=origin)
        self.conns.append(conn)
        return conn

    def arrive(self, origin: str) -> Connection:
        """A connection from ``origin`` that says nothing, once the lobby has taken it into its table."""
        conn = self.connect(origin)
        name = name_of(conn)
        wait_until(lambda: name in self.names(), 10, f"the lobby to take {name}")
        return conn

    def names(self) -> list[str]:
        return [s.peer for s in self.lobby.seen]

    def close(self) -> None:
        self.lobby.close()
        for conn in self.conns:
            conn.abort()
            conn.close()


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Table]:
    monkeypatch.setattr(lobby_module, "PROTECTED", 0.0)  # the order of giving way, not the protection
    t = Table()
    yield t
    t.close()


def gives_way(conn: Connection) -> None:
    wait_until(lambda: ended(conn), 10, f"the lobby to end {name_of(conn)}")


def test_one_origin_holds_its_share_at_most_and_its_own_oldest_gives_way(table: Table) -> None:
    mine = [table.arrive(ORIGINS[0]) for _ in range(MAX_PER_ORIGIN)]
    other = table.arrive(ORIGINS[1])
    newer = table.arrive(ORIGINS[0])
    gives_way(mine[0])
    assert table.names() == [name_of(c) for c in [*mine[1:], other, newer]]
    newest = table.arrive(ORIGINS[0])  # a flood churns its own places only
    gives_way(mine[1])
    assert table.names() == [name_of(c) for c in [*mine[2:], other, newer, newest]]
    assert not any(ended(c) for c in [*mine[2:], other, newer, newest])


def test_a_full_table_makes_room_by_dropping_the_oldest_from_anywhere(table: Table) -> None:
    made = [table.arrive(origin) for _ in range(MAX_PER_ORIGIN) for origin in ORIGINS]
    assert len(table.lobby.seen) == MAX_CONTACTS
    first = table.arrive(NEWCOMER)
    gives_way(made[0])
    second = table.arrive(NEWCOMER)
    gives_way(made[1])  # the oldest left, whichever origin it came from
    assert table.names() == [name_of(c) for c in [*made[2:], first, second]]
    assert not any(ended(c) for c in [*made[2:], first, second])


@pytest.mark.parametrize("full", ["share", "table"])
def test_a_connection_this_side_reached_is_never_the_one_to_go(table: Table, full: str) -> None:
    with tcp.Listener(tcp.Endpoint("127.0.0.1", 0)) as peer:
        table.lobby.hold(peer.endpoint)  # an address a person gave: this side connects and holds the peer
        held = peer.accept(10)
        try:
            wait_until(lambda: any(s.ours for s in table.lobby.seen), 10, "the held peer in the table")
            if full == "share":  # strangers from the held peer's own address
                strangers = [table.arrive("127.0.0.1") for _ in range(MAX_PER_ORIGIN - 1)]
                newcomer = table.arrive("127.0.0.1")
            else:
                strangers = [table.arrive(ORIGINS[i % len(ORIGINS)]) for i in range(MAX_CONTACTS - 1)]
                newcomer = table.arrive(NEWCOMER)
            gives_way(strangers[0])  # the oldest stranger, though the held peer is older still
            seen = table.lobby.seen
            assert seen[0].ours and seen[0].conn is not None and seen[0].conn.origin == "127.0.0.1"
            assert [s.peer for s in seen[1:]] == [name_of(c) for c in [*strangers[1:], newcomer]]
            assert not ended(held)
        finally:
            held.abort()
            held.close()


def test_an_origin_that_must_wait_gives_way_first_and_gets_no_place_in_a_full_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lobby_module, "PROTECTED", 0.0)
    guard = CodeGuard(CODE, clock=lambda: 1000.0)  # time stands still: a lock lasts the whole test
    table = Table(guard)
    try:
        made: dict[str, list[Connection]] = {origin: [] for origin in ORIGINS}
        for _ in range(MAX_PER_ORIGIN):
            for origin in ORIGINS:
                made[origin].append(table.arrive(origin))
        waits = ORIGINS[2]
        for _ in range(3):
            guard.stalled(waits)  # three tries that proved nothing: it must wait
        assert guard.locked(waits, waits)
        table.arrive(NEWCOMER)
        gives_way(made[waits][0])  # not the oldest of all, which came from ORIGINS[0]
        assert not ended(made[ORIGINS[0]][0])
        before = table.names()
        turned_away = table.connect(waits)
        contact = meet(turned_away, "sender", hostname="locked-out")  # it is told why, then closed
        with pytest.raises(PairingError, match=f"no pairing attempts for now: too many tries from {waits}"):
            contact.ctl.expect()
        contact.ctl.close()
        assert table.names() == before
    finally:
        table.close()


def start_attempt_and_stall(conn: Connection) -> None:
    """Say hello and start a pairing attempt on ``conn``, then read nothing: the lobby waits for a proof."""
    state = ControlConnection(binding=conn.binding)
    conn.control.send(state.preamble() + state.send(make_hello("sender", "staller")))
    while state.state is not State.UNPAIRED:  # until the lobby's hello is read
        state.receive_data(conn.control.recv_some())
        while state.next_event() is not None:
            pass
    conn.control.send(state.drive(codes.secret(CODE)))


def pairing(seen: list[Seen]) -> list[str]:
    return [s.peer for s in seen if s.pairing]


def test_an_unfinished_attempt_holds_no_place_against_a_newcomer_from_elsewhere(table: Table) -> None:
    """A stranger holding every place from a few origins, one of them in the middle of an attempt it
    never finishes: a newcomer from an origin with no place yet always gets one, from the origin that
    holds the most, its oldest first, whatever it is doing."""
    trying = table.arrive(ORIGINS[0])
    start_attempt_and_stall(trying)
    wait_until(lambda: pairing(table.lobby.seen) == [name_of(trying)], 5, "the lobby to answer the attempt")
    old = [table.arrive(ORIGINS[i % len(ORIGINS)]) for i in range(1, MAX_CONTACTS)]
    newcomers = [table.arrive(f"127.0.1.{i + 1}") for i in range(MAX_CONTACTS)]  # each pushes out one
    for gone in [trying, *old]:
        gives_way(gone)  # oldest first, the first of them in the middle of its attempt
    assert table.names() == [name_of(c) for c in newcomers]
    late = table.arrive("127.0.2.1")  # every origin holds one place: still the oldest goes
    gives_way(newcomers[0])
    assert table.names() == [name_of(c) for c in [*newcomers[1:], late]]


def test_a_flood_from_one_origin_cannot_push_out_its_own_newcomers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind one NAT: a newcomer there (the real peer) is not pushed out by its neighbour's flood before
    it could pair; the flood's own new connections get no place instead."""
    monkeypatch.setattr(lobby_module, "PROTECTED", 30.0)
    table = Table()
    try:
        mine = [table.arrive(ORIGINS[0]) for _ in range(MAX_PER_ORIGIN)]
        flood = table.connect(ORIGINS[0])
        contact = meet(flood, "sender", hostname="flood")  # it is told why, then closed
        with pytest.raises(PairingError, match="holds every place it may here"):
            contact.ctl.expect()
        contact.ctl.close()
        assert table.names() == [name_of(c) for c in mine] and not any(ended(c) for c in mine)
    finally:
        table.close()
