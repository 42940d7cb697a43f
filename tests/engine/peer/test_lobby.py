"""The lobby and its TCP listener under strangers: trickling, silent, too many, too slow to pair.

Real sockets on loopback, the limits made short for the test."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from recovery import events
from recovery.engine.peer import lobby as lobby_module
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.lobby import Lobby
from recovery.engine.peer.session import handshake, meet
from recovery.errors import CancelledError, PairingError
from recovery.link import tcp
from recovery.link.opening import _TcpSource
from recovery.protocol.linkhello import encode_link_hello

CODE = "lobby-test-code"


def lobby_on_port(**kw: object) -> tuple[Lobby, int, list[events.Event]]:
    seen: list[events.Event] = []
    listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
    lobby = Lobby(CodeGuard(CODE), "receiver", sink=seen.append, **kw)  # type: ignore[arg-type]
    lobby.serve(_TcpSource(listener))
    return lobby, listener.port, seen


def drive(port: int, code: str = CODE) -> object:
    conn = tcp.connect(tcp.Endpoint("127.0.0.1", port))
    return handshake(conn, "sender", code=code, hostname="driver")


def test_a_trickling_stream_is_dropped_after_the_hello_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "HELLO_TIMEOUT", 1.0)
    lobby, port, _ = lobby_on_port()
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        hello = encode_link_hello(0, bytes(16))
        started = time.monotonic()
        closed_at = None
        for byte in hello:
            try:
                slow.sendall(bytes([byte]))
                slow.settimeout(0.4)
                if slow.recv(1) == b"":  # dropped by the listener
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at = time.monotonic()
                break
        assert closed_at is not None and closed_at - started < 3.0, "a trickler was kept past the limit"
        link = drive(port)  # and the real peer still gets in
        assert lobby.wait().theirs.host.hostname == "driver"
        link.close()  # type: ignore[attr-defined]
    finally:
        lobby.close()


def test_a_silent_peer_is_dropped_after_the_pairing_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lobby_module, "PAIR_LIMIT", 1.0)
    lobby = Lobby(CodeGuard(CODE), "receiver")
    listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
    lobby.serve(_TcpSource(listener), limit=1.0)
    try:
        conn = tcp.connect(tcp.Endpoint("127.0.0.1", listener.port))
        contact = meet(conn, "sender", hostname="silent")
        started = time.monotonic()
        with pytest.raises(CancelledError, match="did not pair within 1 s"):
            contact.ctl.expect()  # we say nothing more; the lobby ends the connection, saying why
        assert time.monotonic() - started < 5.0
    finally:
        lobby.close()


def test_many_idle_connections_neither_crash_the_listener_nor_keep_the_peer_out() -> None:
    lobby, port, _ = lobby_on_port()
    idle = []
    try:
        for _ in range(200):  # far more than the table holds: the oldest are dropped
            idle.append(socket.create_connection(("127.0.0.1", port)))
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(drive(port)))
        t.start()
        link = lobby.wait()
        t.join(30)
        assert link.theirs.host.hostname == "driver" and result
    finally:
        for s in idle:
            s.close()
        lobby.close()


def test_wrong_codes_from_parallel_connections_count_against_one_guard() -> None:
    guard = CodeGuard()  # a made code: it changes after three wrong tries
    first = guard.code
    listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
    lobby = Lobby(guard, "receiver")
    lobby.serve(_TcpSource(listener))
    errors: list[BaseException] = []

    def guess() -> None:
        try:
            drive(listener.port, code="0000-0000")
        except PairingError as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=guess) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(errors) == 6  # every one refused: wrong, busy or locked
        assert guard.code != first  # and the code they were guessing is gone
        assert not lobby.done.is_set()
    finally:
        lobby.close()


def test_a_peer_whose_role_is_refused_is_told_why(tmp_path: Path) -> None:
    lobby, port, _ = lobby_on_port(refuse=lambda hello: "only senders here" if hello.role != "sender" else None)
    try:
        conn = tcp.connect(tcp.Endpoint("127.0.0.1", port))
        with pytest.raises(Exception, match="only senders here"):
            handshake(conn, "wizard", code=CODE, hostname="wrong-kind")
    finally:
        lobby.close()


def test_a_wizard_whose_user_types_the_code_is_held_as_long_as_people_take() -> None:
    """Issue 21: the demo's peer (an agent) dropped the wizard that reached it after 30 s, and the wizard
    said "did not pair within 30 s" to a user who was still reading. A wizard is held like a peer this
    side drives (a person types the code); anything else keeps the short limit."""
    lobby = Lobby(CodeGuard(CODE), "agent")
    listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
    lobby.serve(_TcpSource(listener), limit=1.0, hold=3.0)
    try:
        for role, limit in (("wizard", 3), ("sender", 1)):
            conn = tcp.connect(tcp.Endpoint("127.0.0.1", listener.port))
            contact = meet(conn, role, hostname=f"silent-{role}")
            with pytest.raises(CancelledError, match=f"did not pair within {limit} s"):
                contact.ctl.expect()
            conn.close()
    finally:
        lobby.close()
