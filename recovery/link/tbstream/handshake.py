"""The stream-open handshake on ``/dev/tbstreamN`` (pure: no I/O).

Bytes written before the peer has opened its end of a stream can be lost,
so neither side may send session data until it knows the peer is reading.
Each side repeats a SYNC record until it hears a record from the peer (which
proves the peer's end is open), then sends one READY record. The bytes after
the peer's READY are the session's (on the control stream, after the HOPS
rounds if the data HopIDs differed). A reader may find a lost or cut record
in front of the first whole one, so :class:`Scanner` searches for the magic
and checks each candidate's CRC, and never reads past a READY.

Each record carries the HopIDs its sender wrote, so both sides confirm they
use the same values; on the control stream also the data stream's HopID
(compared before the data stream is opened) and whether the sender can
measure thunderbolt-net too.

Record (32 bytes, big-endian)::

    4s  magic  b"U4RS"
    B   version (2)
    B   type: 1 SYNC, 2 READY, 3 HOPS (control stream only, one round of the data-HopID agreement)
    B   channel: 0 control, 1 data (the two sides must agree)
    B   flags: bit 0 = the sender has thunderbolt-net up to this peer and will measure it
    16s session nonce of the sender (the same on both of its streams)
    H   hopid: what the sender wrote to in_hopid and out_hopid of this stream
    H   data_hopid: control stream: the sender's HopID for the data stream; data stream: 0
    I   CRC-32 of the 28 bytes before it
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from recovery.errors import RemoteProtocolError
from recovery.protocol.channels import CONTROL, DATA

MAGIC = b"U4RS"
VERSION = 2
SYNC, READY, HOPS = 1, 2, 3
FLAG_TBNET = 0x01
RECORD = struct.Struct(
    "!"
    "4s"  # magic
    "B"  # version
    "B"  # type
    "B"  # channel
    "B"  # flags
    "16s"  # nonce
    "H"  # hopid
    "H"  # data_hopid
    "I"  # CRC-32 of the fields above
)
BODY = RECORD.size - 4
V1_SIZE, V1_BODY = 28, 24  # version 1 records: 28 bytes, CRC after 24 (no HopIDs)


class HandshakeError(RemoteProtocolError):
    """The peer sent a well-formed handshake record we cannot accept."""


@dataclass(frozen=True)
class Record:
    type: int
    channel: int
    nonce: bytes
    hopid: int
    data_hopid: int = 0
    flags: int = 0


def encode(record: Record) -> bytes:
    if (
        record.type not in (SYNC, READY, HOPS)
        or record.channel not in (CONTROL, DATA)
        or len(record.nonce) != 16
        or not 0 <= record.hopid < 1 << 16
        or not 0 <= record.data_hopid < 1 << 16
        or not 0 <= record.flags < 256
        or (record.type == HOPS and record.channel != CONTROL)
    ):
        raise ValueError("bad handshake record")
    body = RECORD.pack(
        MAGIC, VERSION, record.type, record.channel, record.flags, record.nonce, record.hopid, record.data_hopid, 0
    )[:BODY]
    return body + struct.pack("!I", zlib.crc32(body))


def decode(data: bytes) -> Record | None:
    """The record in exactly ``RECORD.size`` bytes; None if they are not one (noise, a cut record)."""
    if len(data) != RECORD.size:
        return None
    if _is_v1(data):
        raise _version_error(1)
    magic, version, rtype, channel, flags, nonce, hopid, data_hopid, crc = RECORD.unpack(data)
    if magic != MAGIC or zlib.crc32(data[:BODY]) != crc:
        return None
    if version != VERSION:
        raise _version_error(version)
    if rtype not in (SYNC, READY, HOPS) or channel not in (CONTROL, DATA) or (rtype == HOPS and channel != CONTROL):
        raise HandshakeError(f"bad stream handshake record (type {rtype}, channel {channel})")
    return Record(rtype, channel, nonce, hopid, data_hopid, flags)


def _is_v1(data: bytes) -> bool:
    """A record of version 1 at the start of ``data`` (its CRC sits elsewhere)."""
    return (
        len(data) >= V1_SIZE
        and data[:4] == MAGIC
        and data[4] == 1
        and zlib.crc32(data[:V1_BODY]) == struct.unpack("!I", data[V1_BODY:V1_SIZE])[0]
    )


def _version_error(version: int) -> HandshakeError:
    return HandshakeError(
        f"the peer speaks stream handshake version {version}, this side {VERSION}: "
        "run the same usb4-recovery version on both machines"
    )


class Scanner:
    """Finds whole records in a byte stream that may start with noise or a cut record."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipped = 0  # bytes that were not part of a record

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
