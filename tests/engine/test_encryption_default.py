"""Which links seal the data by default: all but a direct USB4STREAM cable; the user decides over that."""

from __future__ import annotations

import socket

import pytest

from recovery.engine.session import PeerLink
from recovery.link.base import Connection, FdChannel
from recovery.protocol import messages as m

HELLO = m.Hello(host=m.HostInfo("h", "b", "usb4-recovery 0.2.0"), role="wizard", nonce="00")


def link(kind: str, encrypt: bool | None) -> PeerLink:
    a, b = socket.socketpair()
    conn = Connection(FdChannel(a.fileno(), owner=a), FdChannel(b.fileno(), owner=b), kind=kind, peer="p")
    return PeerLink(conn, None, HELLO, HELLO, "driver", encrypt=encrypt)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind, sealed", [("tcp", True), ("tbnet", True), ("stdio", True), ("tbstream", False)])
def test_the_link_kind_decides_unless_the_user_did(kind: str, sealed: bool) -> None:
    assert link(kind, None).encrypts is sealed
    assert link(kind, True).encrypts is True and link(kind, False).encrypts is False
    assert ("not encrypted" in link(kind, None).security) is not sealed
