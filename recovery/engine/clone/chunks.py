"""From the extents to copy to the chunks to send.

Chunks never cross a multiple of the chunk size, so the same grid serves
every mode. Extents closer than ``merge_gap`` inside one grid cell share a
chunk: the bytes between them are unused, and the sender zeroes them before
hashing (one read instead of many; zeros cost nothing once compressed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from recovery.protocol.limits import MERGE_GAP

DEFAULT_CHUNK_SIZE = 4 << 20
_ZEROS = memoryview(bytes(MERGE_GAP))  # holes are at most a merge gap long: one slice each, no allocation


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    offset: int
    length: int
    holes: tuple[tuple[int, int], ...] = ()  # (start, length) relative to offset, zero-filled

    @property
    def end(self) -> int:
        return self.offset + self.length

    def part(self, start: int, length: int) -> Chunk:
        """The ``length`` bytes from ``start`` (relative to this chunk's offset), its holes with them."""
        holes = tuple(
            (max(h, start) - start, min(h + n, start + length) - max(h, start))
            for h, n in self.holes
            if h < start + length and h + n > start
        )
        return Chunk(self.seq, self.offset + start, length, holes)

    def zero_holes(self, view: memoryview) -> None:
        """Zero the bytes between the extents this chunk merged (read with the rest, and not the copy's)."""
        for start, length in self.holes:
            for pos in range(start, start + length, len(_ZEROS)):
                n = min(len(_ZEROS), start + length - pos)
                view[pos : pos + n] = _ZEROS[:n]


def _pieces(extents: Sequence[tuple[int, int]], chunk_size: int) -> Iterator[tuple[int, int]]:
    """Extents cut at every multiple of ``chunk_size``: (start, end) pairs."""
    for off, n in extents:
        pos, end = off, off + n
        while pos < end:
            cell_end = (pos // chunk_size + 1) * chunk_size
            stop = min(end, cell_end)
            yield pos, stop
            pos = stop


def plan_chunks(
    extents: Sequence[tuple[int, int]],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    merge_gap: int = MERGE_GAP,
) -> Iterator[Chunk]:
    """The chunks covering ``extents`` (sorted, non-overlapping), in order."""
    seq = 0
    start = end = -1
    holes: list[tuple[int, int]] = []
    for s, e in _pieces(extents, chunk_size):
        same_cell = start >= 0 and s // chunk_size == start // chunk_size
        if same_cell and s - end <= merge_gap:
            if s > end:
                holes.append((end - start, s - end))
            end = e
            continue
        if start >= 0:
            yield Chunk(seq, start, end - start, tuple(holes))
            seq += 1
        start, end, holes = s, e, []
    if start >= 0:
        yield Chunk(seq, start, end - start, tuple(holes))
