"""The stream-open handshake on ``/dev/tbstreamN`` (pure: no I/O).

Bytes written before the peer has opened its end of a stream can be lost,
so neither side may send session data until it knows the peer is reading.
Each side repeats a SYNC record until it hears a record from the peer (which
proves the peer's end is open), then sends one READY record. The bytes after
the peer's READY are the session. A reader may find a lost or cut record in
front of the first whole one, so :class:`Scanner` searches for the magic and
checks each candidate's CRC, and never reads past a READY.

Record (28 bytes, big-endian)::

    4s  magic  b"U4RS"
    B   version (1)
    B   type: 1 SYNC, 2 READY
    B   channel: 0 control, 1 data (the two sides must agree)
    B   reserved, 0
    16s session nonce of the sender (the same on both of its streams)
    I   CRC-32 of the 24 bytes before it
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from recovery.errors import RemoteProtocolError

MAGIC = b"U4RS"
VERSION = 1
SYNC, READY = 1, 2
CONTROL, DATA = 0, 1
RECORD = struct.Struct(
    "!"
    "4s"  # magic
    "B"  # version
    "B"  # type
    "B"  # channel
    "B"  # reserved (0)
    "16s"  # nonce
    "I"  # CRC-32 of the fields above
)
BODY = RECORD.size - 4


class HandshakeError(RemoteProtocolError):
    """The peer sent a well-formed handshake record we cannot accept."""


@dataclass(frozen=True)
class Record:
    type: int
    channel: int
    nonce: bytes


def encode(record: Record) -> bytes:
    if record.type not in (SYNC, READY) or record.channel not in (CONTROL, DATA) or len(record.nonce) != 16:
        raise ValueError("bad handshake record")
    body = RECORD.pack(MAGIC, VERSION, record.type, record.channel, 0, record.nonce, 0)[:BODY]
    return body + struct.pack("!I", zlib.crc32(body))


def decode(data: bytes) -> Record | None:
    """The record in exactly ``RECORD.size`` bytes; None if they are not one (noise, a cut record)."""
    if len(data) != RECORD.size:
        return None
    magic, version, rtype, channel, reserved, nonce, crc = RECORD.unpack(data)
    if magic != MAGIC or zlib.crc32(data[:BODY]) != crc:
        return None
    if version != VERSION:
        raise HandshakeError(f"the peer speaks stream handshake version {version}, this side {VERSION}: "
                             "run the same usb4-recovery version on both machines")
    if rtype not in (SYNC, READY) or channel not in (CONTROL, DATA) or reserved:
        raise HandshakeError(f"bad stream handshake record (type {rtype}, channel {channel})")
    return Record(rtype, channel, nonce)


class Scanner:
    """Finds whole records in a byte stream that may start with noise."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipped = 0  # bytes of noise dropped

    def want(self) -> int:
        """How many bytes to read next: never more than can complete one record."""
        return RECORD.size - len(self.buf)

    def feed(self, data: bytes) -> Record | None:
        """Add at most :meth:`want` bytes; the record they complete, if any."""
        if len(data) > self.want():
            raise ValueError("fed more than want()")
        self.buf += data
        self._align()
        if len(self.buf) < RECORD.size:
            return None
        record = decode(bytes(self.buf))
        if record is not None:
            self.buf.clear()
            return record
        self._cut(1)
        self._align()
        return None

    def _align(self) -> None:
        """Drop bytes until the buffer starts like a record could."""
        while self.buf:
            n = min(len(self.buf), len(MAGIC))
            if self.buf[:n] == MAGIC[:n]:
                return
            nxt = self.buf.find(MAGIC[:1], 1)
            self._cut(len(self.buf) if nxt < 0 else nxt)

    def _cut(self, n: int) -> None:
        del self.buf[:n]
        self.skipped += n
