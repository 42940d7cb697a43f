"""A misbehaving sender built from the real protocol codecs, over a real socket."""

from __future__ import annotations

import os

import blake3

from recovery.disks.identity import host_info
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.frames import ChunkHeader, Codec, Kind, encode_header, end_header
from recovery.protocol.state import ControlConnection

CHUNK = 1 << 20


class FakeSender:
    def __init__(self, port: int) -> None:
        self.conn: Connection = tcp.connect(tcp.Endpoint("127.0.0.1", port))
        self.state = ControlConnection()

    def send_control(self, data: bytes) -> None:
        self.conn.control.send(data)

    def hello(self) -> m.Hello:
        self.send_control(self.state.preamble() + self.state.send(
            m.Hello(host=host_info("fake 0"), role="sender", nonce="00" * 16)))
        msg = self.next_message()
        assert isinstance(msg, m.Hello)
        return msg

    def next_message(self) -> m.Message:
        while True:
            msg = self.state.next_message()
            if msg is not None and not isinstance(msg, m.Ping):
                return msg
            if msg is None:
                data = self.conn.control.recv_some()
                assert data, "receiver closed the control channel"
                self.state.receive_data(data)

    def plan(self, size: int) -> m.Message:
        identity = m.Identity(path="/dev/fake", size=size, kind="disk", host_id="fake-host",
                              fingerprint="00" * 32)
        plan = m.Plan(session="s", source=identity, size=size, mode="exact", chunk_size=CHUNK,
                      codecs=("raw",), map=m.MapSummary(extents=1, bytes=size, digest="00" * 32))
        self.send_control(self.state.send(plan))
        return self.next_message()

    def frame(self, seq: int, offset: int, data: bytes, *, digest: bytes | None = None,
              raw_len: int | None = None) -> None:
        header = ChunkHeader(seq, offset, raw_len if raw_len is not None else len(data), len(data),
                             Kind.DATA, Codec.RAW, digest or blake3.blake3(data).digest())
        self.conn.data.send_parts((encode_header(header), data))

    def end(self, frames: int) -> None:
        self.conn.data.send(encode_header(end_header(frames)))

    def close(self) -> None:
        self.conn.close()


def pattern(n: int, seed: int = 0) -> bytes:
    return (bytes([seed & 0xFF]) + os.urandom(15)) * (n // 16)
