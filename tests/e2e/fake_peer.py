"""A misbehaving sender built from the real protocol codecs, over a real socket.

It pairs for real (it knows the code, as an attacker who watched the screen
would, or does not) and then sends whatever a test wants on the data channel,
with headers MAC'd under the clone's real keys unless told otherwise.
"""

from __future__ import annotations

import os

import blake3
import zstandard

from recovery.disks.identity import host_info
from recovery.engine.clone.framelist import RECORD as LIST_RECORD
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.protocol import codes
from recovery.protocol import messages as m
from recovery.protocol.frames import ChunkHeader, Codec, Kind, encode_header, end_header
from recovery.protocol.pake import DataKeys
from recovery.protocol.state import ControlConnection, Paired, PairingFailed, Reply
from tests.helpers import CODE

CHUNK = 1 << 20


class FakeSender:
    def __init__(self, port: int, *, source: str | None = None) -> None:
        """``source``: the local address to come from (127.0.0.2 ...: another origin on this host)."""
        self.conn: Connection = tcp.connect(tcp.Endpoint("127.0.0.1", port), source=source)
        self.state = ControlConnection(binding=self.conn.binding)
        self.keys: DataKeys | None = None
        self.list_hasher = blake3.blake3()
        self.sent = 0  # bytes the frames cover

    def send_control(self, data: bytes) -> None:
        self.conn.control.send(data)

    def hello(self, role: str = "sender", caps: tuple[str, ...] = ()) -> m.Hello:
        self.send_control(
            self.state.preamble()
            + self.state.send(m.Hello(host=host_info("fake 0"), role=role, nonce=os.urandom(16).hex(), caps=caps))
        )  # type: ignore[arg-type]
        msg = self.next_event()
        assert isinstance(msg, m.Hello)
        return msg

    def pair(self, code: str = CODE, *, rejoin: bytes | None = None) -> Paired | PairingFailed:
        """One pairing attempt with ``code`` (or claiming to be a lost pairing come back, proving
        ``rejoin``); after a success the receiver's inventory is read too."""
        self.send_control(self.state.drive(rejoin, rejoin=True) if rejoin else self.state.drive(codes.secret(code)))
        while True:
            event = self.next_event()
            if isinstance(event, Reply):  # our proof, sent first
                self.send_control(event.data)
                continue
            if isinstance(event, Paired):
                self.send_control(self.state.send(m.Introduce(host=host_info("fake 0"))))
                assert isinstance(self.next_event(), m.Introduce)
                assert isinstance(self.next_event(), m.Inventory)
                return event
            if isinstance(event, PairingFailed):
                if event.reply:
                    self.send_control(event.reply)
                return event

    def next_event(self) -> object:
        while True:
            event = self.state.next_event()
            if event is not None and not isinstance(event, m.Ping):
                return event
            if event is None:
                data = self.conn.control.recv_some()
                assert data, "receiver closed the control channel"
                self.state.receive_data(data)

    def plan(self, size: int, *, frames: int | None = None, covered: int | None = None, chunk: int = CHUNK) -> object:
        identity = m.Identity(path="/dev/fake", size=size, kind="disk", host_id="fake-host", fingerprint="00" * 32)
        covered = size if covered is None else covered
        plan = m.Plan(
            session="s",
            source=identity,
            size=size,
            mode="exact",
            chunk_size=chunk,
            codecs=("raw", "zstd"),
            map=m.MapSummary(extents=1, bytes=covered, digest="00" * 32),
            frames=-(-covered // chunk) if frames is None else frames,
            encrypted=False,
        )
        self.send_control(self.state.send(plan))
        self.keys = self.state.clone_keys(plan.session)
        return self.next_event()

    def frame(
        self,
        seq: int,
        offset: int,
        data: bytes,
        *,
        digest: bytes | None = None,
        raw_len: int | None = None,
        key: bytes | None = None,
        kind: Kind = Kind.DATA,
        compress: bool = False,
    ) -> None:
        assert self.keys is not None
        payload = b"" if kind is Kind.ZERO else (zstandard.ZstdCompressor().compress(data) if compress else data)
        header = ChunkHeader(
            seq,
            offset,
            raw_len if raw_len is not None else len(data),
            len(payload),
            kind,
            Codec.ZSTD if compress else Codec.RAW,
            digest or blake3.blake3(data).digest(),
        )
        self.conn.data.send_parts((encode_header(header, key or self.keys.header), payload))
        self.list_hasher.update(LIST_RECORD.pack(header.offset, header.raw_len, header.digest))
        self.sent += header.raw_len

    def finish(self, frames: int, **claims: object) -> object:
        """END, then `done` as an honest sender says it (with ``claims`` added); the receiver's next message."""
        self.end(frames)
        self.send_control(
            self.state.send(m.Done(frames=frames, bytes=self.sent, list_digest=self.list_hasher.hexdigest(), **claims))
        )
        return self.next_event()

    def end(self, frames: int) -> None:
        assert self.keys is not None
        self.conn.data.send(encode_header(end_header(frames), self.keys.header))

    def close(self) -> None:
        self.conn.close()


def pattern(n: int, seed: int = 0) -> bytes:
    return (bytes([seed & 0xFF]) + os.urandom(15)) * (n // 16)
