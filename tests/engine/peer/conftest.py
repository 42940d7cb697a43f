"""Fixtures for the peer tests: two real ControlLinks, paired over loopback TCP."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.session import PeerLink, handshake
from recovery.link import tcp

CODE = "peer-test-code"


@pytest.fixture
def paired() -> Iterator[tuple[PeerLink, PeerLink]]:
    """(driver, server): a sender called driver-box paired with a receiver called server-box."""
    listener = tcp.Listener(tcp.Endpoint("127.0.0.1", 0))
    links: list[PeerLink] = []
    served: list[PeerLink] = []

    def serve() -> None:
        served.append(handshake(listener.accept(10), "receiver", guard=CodeGuard(CODE), hostname="server-box"))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        links.append(
            handshake(tcp.connect(tcp.Endpoint("127.0.0.1", listener.port)), "sender", code=CODE, hostname="driver-box")
        )
        server.join(10)
        links += served
        assert len(links) == 2, "the server side did not pair"
        yield links[0], links[1]
    finally:
        for link in links:
            link.close()
            link.conn.abort()
            link.conn.close()
        listener.close()
