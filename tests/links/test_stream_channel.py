"""The stream channel on real descriptors (a socket pair standing in for /dev/tbstreamN's fd).

A socket is not the stream driver (tests/links/test_fakekernel.py shows the
driver's own behaviour); these check the channel's own logic through the
production :class:`FdDevice`: the reader that runs while nobody reads, the
bytes it reads ahead handed out first, the end of stream latched.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from recovery.errors import LinkError
from recovery.link.tbstream.channel import StreamChannel
from recovery.link.tbstream.device import FdDevice


@pytest.fixture
def pair() -> Iterator[tuple[StreamChannel, socket.socket]]:
    ours, theirs = socket.socketpair()
    chan = StreamChannel(FdDevice(ours.detach(), "test"), "data")
    yield chan, theirs
    chan.close()
    theirs.close()


def wait_for(what: object, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not what() and time.monotonic() < end:  # type: ignore[operator]
        time.sleep(0.02)


def test_the_peers_close_is_seen_without_anyone_reading(pair: tuple[StreamChannel, socket.socket]) -> None:
    chan, theirs = pair
    theirs.sendall(b"last words")
    theirs.close()
    wait_for(chan.gone)
    assert chan.gone() == "the peer closed the data stream"
    assert chan.recv_some(64) == b"last words"  # read ahead by the watcher, handed out first
    assert chan.recv_some(64) == b""
    with pytest.raises(LinkError, match="the peer closed the data stream"):
        chan.send(b"into the void")


def test_bytes_flow_both_ways_with_short_reads(pair: tuple[StreamChannel, socket.socket]) -> None:
    chan, theirs = pair
    chan.send(b"x" * 100_000)
    got = b""
    while len(got) < 100_000:
        got += theirs.recv(65536)
    assert got == b"x" * 100_000
    theirs.sendall(b"0123456789")
    buf = memoryview(bytearray(4))
    chan.recv_exact(buf)
    assert bytes(buf) == b"0123"
    assert chan.recv_some(64) == b"456789"
    assert chan.bytes_in == 10 and chan.bytes_out == 100_000 and chan.gone() is None


def test_close_releases_the_descriptor_promptly(pair: tuple[StreamChannel, socket.socket]) -> None:
    chan, _ = pair
    started = time.monotonic()
    chan.close()
    assert time.monotonic() - started < 1
    with pytest.raises(LinkError):
        chan.recv_some(4)
