"""A delta offer's ``digests`` pages (capability "delta"), pure: entries in, messages out, and back.

A receiver whose target holds an earlier clone of the source offers the digest of each of its chunks
with where it lies: ``digests`` pages whose optional ``ranges`` field gives, for each digest, its
offset (8 bytes) and length (4 bytes), big-endian, in hex. Entries come in increasing, non-overlapping
offsets on the plan's grid; :func:`decode_page` checks every one against the plan before the sender
keeps it, so a hostile receiver can make the sender hold no more than its plan's own frames.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from recovery.protocol import messages as m
from recovery.protocol.frames import DIGEST_SIZE, FrameError

RANGE = struct.Struct("!QI")
Entry = tuple[int, int, bytes]  # offset, length, BLAKE3 of the bytes the target holds there


def encode_pages(entries: Sequence[Entry]) -> list[m.Digests]:
    """The ``digests`` messages for ``entries``, :data:`~recovery.protocol.messages.DIGEST_PAGE` a page."""
    pages = []
    for first in range(0, len(entries), m.DIGEST_PAGE):
        page = entries[first : first + m.DIGEST_PAGE]
        pages.append(
            m.Digests(
                first=first,
                digests="".join(d.hex() for _, _, d in page),
                ranges="".join(RANGE.pack(o, n).hex() for o, n, _ in page),
            )
        )
    return pages


def decode_page(page: m.Digests, first: int, after: int, chunk_size: int, size: int) -> list[Entry]:
    """The entries of ``page``, which must follow on at entry ``first`` and lie past byte ``after``, each
    inside one grid cell of ``chunk_size`` and below ``size``; FrameError (a protocol error) if not."""
    if page.first != first or page.ranges is None:
        raise FrameError(f"the receiver's delta digests do not follow on (page at {page.first}, expected {first})")
    try:
        digests, ranges = bytes.fromhex(page.digests), bytes.fromhex(page.ranges)
    except ValueError:
        raise FrameError("the receiver's delta digests are not hexadecimal") from None
    count = len(digests) // DIGEST_SIZE
    if len(digests) % DIGEST_SIZE or len(ranges) != count * RANGE.size:
        raise FrameError(f"the receiver's delta page at {first} has {count} digests and not as many ranges")
    entries: list[Entry] = []
    for i, (offset, length) in enumerate(RANGE.iter_unpack(ranges)):
        if offset < after or not 0 < length <= chunk_size or offset + length > size:
            raise FrameError(f"the receiver offers bytes {offset}+{length}, out of order or outside the plan")
        if offset // chunk_size != (offset + length - 1) // chunk_size:
            raise FrameError(f"the receiver offers bytes {offset}+{length}, across the {chunk_size}-byte grid")
        entries.append((offset, length, digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]))
        after = offset + length
    return entries
