"""Measuring two cable links at the start of a session (pure: records and blocks, no I/O).

When both USB4STREAM and thunderbolt-net are up, the side that sends
(:mod:`recovery.link.auto`) streams :data:`BLOCK`-sized blocks over each
link's data channel for about a second; the other side times them and
reports the rate; the sender picks the faster link and says so. The records
travel on the USB4STREAM control stream, which is open first.

Record (20 bytes, big-endian)::

    4s  magic b"U4RM"
    B   version (1)
    B   type: 1 HAVE (value: bit mask of the links this side opened), 2 START (value: ms of sending),
              3 RESULT (value: bytes per second the receiver timed), 4 CHOICE
    B   link: 1 USB4STREAM, 2 thunderbolt-net (0 for HAVE)
    B   reserved, 0
    Q   value
    I   CRC-32 of the 16 bytes before it

Block header (the first 16 bytes of each block; the rest are zeros)::

    8s  magic b"U4RMDATA"
    I   sequence number, from 0
    I   flags: bit 0 = the last block
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from recovery.errors import RemoteProtocolError

MAGIC = b"U4RM"
VERSION = 1
HAVE, START, RESULT, CHOICE = 1, 2, 3, 4
LINKS = {"tbstream": 1, "tbnet": 2}
KINDS = {v: k for k, v in LINKS.items()}
RECORD = struct.Struct("!4sBBBBQI")
BLOCK = 1 << 20  # 256 ring slots of 4 KiB: a large multiple of the frame size
BLOCK_HEADER = struct.Struct("!8sII")
BLOCK_MAGIC = b"U4RMDATA"
LAST = 0x1


class MeasureError(RemoteProtocolError):
    """The peer sent something else than a measurement record or block."""


@dataclass(frozen=True)
class Record:
    type: int
    link: str | None  # "tbstream", "tbnet", or None (HAVE)
    value: int = 0


def encode(record: Record) -> bytes:
    link = 0 if record.link is None else LINKS[record.link]
    body = RECORD.pack(MAGIC, VERSION, record.type, link, 0, record.value, 0)[:-4]
    return body + struct.pack("!I", zlib.crc32(body))


def decode(data: bytes) -> Record:
    if len(data) != RECORD.size:
        raise MeasureError("cut measurement record")
    magic, version, rtype, link, reserved, value, crc = RECORD.unpack(data)
    if magic != MAGIC or zlib.crc32(data[:-4]) != crc:
        raise MeasureError("the peer sent something else than a measurement record")
    if version != VERSION:
        raise MeasureError(f"the peer measures links with version {version}, this side {VERSION}")
    if rtype not in (HAVE, START, RESULT, CHOICE) or reserved or (rtype != HAVE and link not in KINDS):
        raise MeasureError(f"bad measurement record (type {rtype}, link {link})")
    return Record(rtype, KINDS.get(link) if rtype != HAVE else None, value)


def mask(kinds: set[str] | tuple[str, ...]) -> int:
    return sum(LINKS[k] for k in kinds)


def unmask(value: int) -> set[str]:
    return {k for k, bit in LINKS.items() if value & bit}


def block_header(seq: int, last: bool) -> bytes:
    return BLOCK_HEADER.pack(BLOCK_MAGIC, seq, LAST if last else 0)


def read_block_header(data: bytes | memoryview) -> tuple[int, bool]:
    """(sequence number, last) of a block; :class:`MeasureError` if it is not one."""
    magic, seq, flags = BLOCK_HEADER.unpack(bytes(data[: BLOCK_HEADER.size]))
    if magic != BLOCK_MAGIC or flags & ~LAST:
        raise MeasureError("the peer sent something else than a measurement block")
    return seq, bool(flags & LAST)


def pick(rates: dict[str, float]) -> str:
    """The faster link; USB4STREAM when they are equal (it needs no IP set-up)."""
    return max(sorted(rates, key=lambda k: LINKS[k]), key=lambda k: rates[k])


def describe(rates: dict[str, float], chosen: str, seconds: float) -> str:
    """Why ``chosen`` was picked, for the peer event and the wizard."""
    names = {"tbstream": "USB4STREAM", "tbnet": "thunderbolt-net"}
    parts = ", ".join(f"{names[k]} {rates[k] / 1e9:.2f} GB/s" for k in sorted(rates, key=lambda k: LINKS[k]))
    return f"{names[chosen]}: the faster when measured at the start ({parts}; {seconds:.1f} s)"
