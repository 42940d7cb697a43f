"""Finding the peer: the first one wins, every source stops promptly, cable events become status."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from recovery.engine.session import PeerLink, handshake
from recovery.errors import CancelledError, NoPeerError
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.tui import finder as finder_module
from recovery.tui.finder import PeerFinder
from tests.tui.helpers import connection_pair


class Seen:
    def __init__(self) -> None:
        self.links: list[PeerLink] = []
        self.status: list[tuple[str, str]] = []

    def finder(self) -> PeerFinder:
        return PeerFinder(disks=lambda: (), found=self.links.append,
                          status=lambda s, t: self.status.append((s, t)), hostname="here", timeout=5)


def _other_end(conn: Connection, role: str = "agent") -> threading.Thread:
    t = threading.Thread(target=lambda: handshake(conn, role, hostname="there"), daemon=True)
    t.start()
    return t


def test_a_cable_opener_hands_over_the_first_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finder_module, "RETRY", 0.05)
    seen = Seen()
    finder = seen.finder()
    ours, theirs = connection_pair()
    attempts = iter([NoPeerError("no peer on the cable"), ours])

    def opener(stop: threading.Event) -> Connection:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        _other_end(theirs)
        return item

    finder.use("cable", opener)
    assert [link.theirs.host.hostname for link in seen.links] == ["there"]
    assert ("cable", "no peer on the cable") in seen.status
    assert seen.status[-1] == ("cable", "connected over test")


def test_stopping_the_finder_ends_a_cable_opener_wait() -> None:
    """The opener gets the finder's stop switch: quitting never waits out an attempt."""
    seen = Seen()
    finder = seen.finder()
    waiting = threading.Event()

    def opener(stop: threading.Event) -> Connection:
        waiting.set()
        if stop.wait(60):
            raise CancelledError("stopped")
        raise AssertionError("the stop never came")

    t = threading.Thread(target=finder.use, args=("cable", opener))
    t.start()
    assert waiting.wait(5)
    finder.stop()
    t.join(5)
    assert not t.is_alive()
    assert not seen.status, "a stop is not news for the screen"


def test_a_peer_that_is_not_a_wizard_is_turned_away() -> None:
    seen = Seen()
    ours, theirs = connection_pair()
    _other_end(theirs, role="receiver")
    assert not seen.finder().offer(ours)
    assert not seen.links and "runs `recovery receive`" in seen.status[-1][1]


def test_listen_and_connect_stop_promptly() -> None:
    seen = Seen()
    finder = seen.finder()
    threads = [threading.Thread(target=finder.listen, args=(tcp.Endpoint("127.0.0.1", 0),)),
               threading.Thread(target=finder.connect, args=(tcp.Endpoint("127.0.0.1", 9),))]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    finder.stop()
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 3 and not any(t.is_alive() for t in threads)
    assert any(s == "tcp" and t.startswith("listening on port") for s, t in seen.status)


def test_cable_events_become_status(tmp_path: Path) -> None:
    seen = Seen()
    finder = seen.finder()
    r, w = os.pipe()

    class Monitor:
        def fileno(self) -> int:
            return r

        def poll(self, timeout: float | None = None) -> str | None:
            return os.read(r, 100).decode() or None

    t = threading.Thread(target=finder.watch, args=("cable", Monitor(), str.upper))
    t.start()
    os.write(w, b"peer came")
    deadline = time.monotonic() + 5
    while ("cable", "PEER CAME") not in seen.status and time.monotonic() < deadline:
        time.sleep(0.05)
    finder.stop()
    t.join(5)
    os.close(r)
    os.close(w)
    assert ("cable", "PEER CAME") in seen.status and not t.is_alive()
