"""The TCP listener pairs a sender's two streams by their token, in whichever order their hellos arrive
(real sockets on the loopback)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from recovery.link import tcp
from recovery.link.base import Connection
from recovery.protocol.channels import CONTROL, DATA
from recovery.protocol.linkhello import encode_link_hello


def stream(port: int, channel: int, token: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode_link_hello(channel, token))
    return sock


def accepted(listener: tcp.Listener) -> Connection:
    return listener.accept(timeout=10)


@pytest.mark.parametrize("first", [CONTROL, DATA])
def test_the_two_streams_pair_whichever_hello_arrives_first(first: int) -> None:
    token = os.urandom(16)
    with tcp.Listener(tcp.Endpoint("127.0.0.1", 0)) as listener:
        result: list[Connection] = []
        waiter = threading.Thread(target=lambda: result.append(accepted(listener)))
        waiter.start()
        one = stream(listener.port, first, token)
        other = stream(listener.port, DATA if first == CONTROL else CONTROL, token)
        control, data = (one, other) if first == CONTROL else (other, one)
        waiter.join(15)
        [conn] = result
        try:
            control.sendall(b"on control")
            data.sendall(b"on data")
            assert conn.control.recv_some() == b"on control"
            assert conn.data.recv_some() == b"on data"
        finally:
            conn.close()
            one.close()
            other.close()


def paired_despite(listener: tcp.Listener, stray: socket.socket, token: bytes) -> None:
    """The sender's own two streams (data first) pair, whatever ``stray`` said before them."""
    data = stream(listener.port, DATA, token)
    control = stream(listener.port, CONTROL, token)
    conn = accepted(listener)
    try:
        assert conn.address.startswith("127.0.0.1")
        control.sendall(b"control")
        data.sendall(b"data")
        assert (conn.control.recv_some(), conn.data.recv_some()) == (b"control", b"data")
    finally:
        conn.close()
        for s in (stray, data, control):
            s.close()


def test_a_stream_of_another_sender_does_not_complete_a_pair() -> None:
    """A data stream with a stranger's token waits alone; the real sender's two streams still pair."""
    with tcp.Listener(tcp.Endpoint("127.0.0.1", 0)) as listener:
        paired_despite(listener, stream(listener.port, DATA, os.urandom(16)), os.urandom(16))


def test_a_stream_planted_from_another_address_does_not_complete_a_pair() -> None:
    """Someone who saw a sender's token on the network plants a control stream with it from another
    address: the sender's own data stream does not pair with it; the sender's own two streams do."""
    token = os.urandom(16)
    with tcp.Listener(tcp.Endpoint("127.0.0.1", 0)) as listener:
        planted = socket.create_connection(("127.0.0.1", listener.port), source_address=("127.0.0.2", 0))
        planted.sendall(encode_link_hello(CONTROL, token))
        paired_despite(listener, planted, token)
