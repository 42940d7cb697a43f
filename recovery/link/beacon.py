"""The thunderbolt-net beacon: how a sender finds a receiver on a link (pure: no I/O).

The sender multicasts a QUERY to the link-local all-nodes group ``ff02::1``
on :data:`BEACON_PORT` of one interface; each waiting receiver answers the
sender's address with an OFFER naming the TCP port it listens on (on its
link-local address on that interface) and echoing the query's nonce. The
sender then runs the usual two-stream TCP link to the offer's source address.

Datagram (big-endian), 24 + name bytes, at most :data:`MAX_DATAGRAM`::

    4s   magic  b"U4RB"
    B    version (1)
    B    type: 1 QUERY, 2 OFFER
    H    TCP port (OFFER), 0 (QUERY)
    16s  nonce chosen by the querier; an OFFER echoes it
    B    name length, 0..64
    ...  name: the sender's host name (UTF-8), for messages and logs

Compatibility: a different magic is not ours and is ignored; a different
version is reported (see :class:`VersionMismatch`) so the user learns that
the two sides run different releases, and is never answered.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from recovery.errors import RemoteProtocolError

MAGIC = b"U4RB"
VERSION = 1
QUERY, OFFER = 1, 2
BEACON_PORT = 7555  # UDP; one above the TCP link's default port
HEADER = struct.Struct(
    "!"
    "4s"  # magic
    "B"  # version
    "B"  # type
    "H"  # TCP port
    "16s"  # nonce
    "B"  # name length
)
MAX_NAME = 64
MAX_DATAGRAM = HEADER.size + MAX_NAME


class BeaconError(RemoteProtocolError):
    """A datagram that is not a valid beacon."""


class NotOurs(BeaconError):
    """Another program's datagram on the beacon port."""


class VersionMismatch(BeaconError):
    def __init__(self, version: int) -> None:
        super().__init__(
            f"a peer speaks beacon version {version}, this side {VERSION}",
            hint="run the same usb4-recovery release on both machines",
        )
        self.version = version


@dataclass(frozen=True)
class Beacon:
    type: int
    nonce: bytes
    port: int = 0
    name: str = ""


def encode(b: Beacon) -> bytes:
    name = b.name.encode()[:MAX_NAME]
    if b.type not in (QUERY, OFFER) or len(b.nonce) != 16 or not 0 <= b.port <= 0xFFFF:
        raise ValueError("bad beacon")
    if (b.type == OFFER) != (b.port > 0):
        raise ValueError("an offer names a port, a query does not")
    return HEADER.pack(MAGIC, VERSION, b.type, b.port, b.nonce, len(name)) + name


def decode(data: bytes) -> Beacon:
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise NotOurs("not a usb4-recovery beacon")
    _, version, btype, port, nonce, name_len = HEADER.unpack_from(data)
    if version != VERSION:
        raise VersionMismatch(version)
    if len(data) > MAX_DATAGRAM or name_len > MAX_NAME or len(data) != HEADER.size + name_len:
        raise BeaconError(f"beacon of {len(data)} bytes does not match its name length {name_len}")
    if btype not in (QUERY, OFFER):
        raise BeaconError(f"unknown beacon type {btype}")
    if (btype == OFFER) != (port > 0):
        raise BeaconError("beacon port does not fit its type")
    name = data[HEADER.size :].decode(errors="replace")
    return Beacon(btype, nonce, port, name)
