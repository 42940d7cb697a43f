"""A BLOCKS frame's payload (capability "delta-blocks"), pure: bytes in, digests out.

In a delta clone, a chunk the target holds in an older version (the receiver offered a digest for
exactly its range, and the source's differs) need not cross whole: the sender sends a BLOCKS frame,
whose header names the chunk and the source's digest of it, and whose payload is the source's
BLAKE3 of each :data:`~recovery.protocol.limits.DELTA_BLOCK` bytes of it (the last block of a chunk
may be shorter), followed by a 16-byte MAC over the header and those digests (BLAKE3 keyed with the
clone's header key), so a damaged or forged list is never used. The receiver reads its own version
of the chunk, and asks at the END for the blocks that differ (``resend.repair``).
"""

from __future__ import annotations

import hmac

import blake3

from recovery.errors import IntegrityError
from recovery.protocol.limits import DELTA_BLOCK

DIGEST = 32
MAC = 16


def block_ranges(offset: int, length: int) -> list[tuple[int, int]]:
    """The blocks of the chunk at ``offset``, ``length`` bytes long: (offset, length) each."""
    return [(offset + at, min(DELTA_BLOCK, length - at)) for at in range(0, length, DELTA_BLOCK)]


def payload_size(length: int) -> int:
    """The payload of a BLOCKS frame for a chunk of ``length`` bytes (before any seal)."""
    return -(-length // DELTA_BLOCK) * DIGEST + MAC


def digests_of(data: bytes | memoryview) -> bytes:
    """The BLAKE3 of each block of ``data``, concatenated."""
    view = memoryview(data)
    return b"".join(blake3.blake3(view[at : at + DELTA_BLOCK]).digest() for at in range(0, len(view), DELTA_BLOCK))


def _mac(key: bytes, header: bytes | memoryview, digests: bytes | memoryview) -> bytes:
    return blake3.blake3(bytes(header) + bytes(digests), key=key).digest(length=MAC)


def encode(key: bytes, header: bytes, digests: bytes) -> bytes:
    """The payload: ``digests`` and their MAC, which binds them to this frame's ``header``."""
    return digests + _mac(key, header, digests)


def decode(key: bytes, header: bytes | memoryview, payload: bytes | memoryview, length: int) -> list[bytes]:
    """The block digests of a chunk of ``length`` bytes, from a BLOCKS frame's (opened) payload;
    :class:`IntegrityError` if the MAC does not hold."""
    if len(payload) != payload_size(length):
        raise IntegrityError(f"a BLOCKS frame's payload of {len(payload)} bytes is not {payload_size(length)}")
    digests, mac = bytes(payload[:-MAC]), bytes(payload[-MAC:])
    if not hmac.compare_digest(mac, _mac(key, header, digests)):
        raise IntegrityError(
            "a BLOCKS frame's digests failed their authentication: damaged or changed on the way",
            hint="check the cable or link and run the clone again",
        )
    return [digests[at : at + DIGEST] for at in range(0, len(digests), DIGEST)]
