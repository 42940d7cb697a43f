"""Which links seal the data by default: all but a direct USB4STREAM cable; the user decides over that."""

from __future__ import annotations

import socket

import pytest

from recovery.engine.peer.session import PeerLink
from recovery.link.base import Connection, FdChannel
from recovery.protocol import messages as m

HELLO = m.Hello(host=m.HostInfo("h", "b", "usb4-recovery 0.2.0"), role="wizard", nonce="00")


def link(kind: str, encrypt: bool | None, *, private: bool = False) -> PeerLink:
    a, b = socket.socketpair()
    conn = Connection(
        FdChannel(a.fileno(), owner=a), FdChannel(b.fileno(), owner=b), kind=kind, peer="p", private=private
    )
    return PeerLink(conn, None, HELLO, HELLO, "driver", encrypt=encrypt)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind, private", [("tcp", False), ("tcp", True), ("tbnet", False), ("stdio", False), ("tbstream", True)]
)
def test_a_link_a_network_can_reach_is_sealed_unless_the_user_decided(kind: str, private: bool) -> None:
    assert link(kind, None, private=private).encrypts is not private
    assert link(kind, True, private=private).encrypts is True
    assert link(kind, False, private=private).encrypts is False
    assert ("not encrypted" in link(kind, None, private=private).security) is private
    # the label says what the link gets, whatever this side's own wish: the same on both sides
    assert link(kind, not private, private=private).security == link(kind, None, private=private).security


def test_loopback_tcp_is_private() -> None:
    from recovery.link import tcp

    with tcp.Listener(tcp.Endpoint("127.0.0.1", 0)) as listener:
        out = tcp.connect(tcp.Endpoint("127.0.0.1", listener.port))
        inbound = listener.accept(5)
        assert out.private and inbound.private
        out.close()
        inbound.close()
