"""An image's disk as a sparse raw file, and its block map for bmaptool.

The file is made as long as the disk and only the 4 KiB blocks that hold a non-zero byte are written:
zero chunks, bytes no chunk holds and zero blocks inside a chunk stay holes. The block map's ranges
are the image's stored chunks (rounded out to whole blocks), so ``bmaptool copy`` writes exactly
what the image stored, zeros inside a chunk included. The workers decode each chunk, find its
non-zero blocks and take the SHA256 of its blocks; the one writing thread takes them in disk order.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from recovery.diskimage import format as f
from recovery.diskimage.ahead import worked_ahead
from recovery.diskimage.bmap import BLOCK, BlockMap
from recovery.diskimage.reader import ImageReader
from recovery.disks.blockdev import write_all
from recovery.errors import Interrupted, TargetWriteError

_ZERO_BLOCK = bytes(BLOCK)


@dataclass(frozen=True)
class _Chunk:
    """What a worker made of one stored chunk."""

    entry: f.Entry
    data: bytes
    runs: list[tuple[int, int]]  # [start, end) in ``data`` of the blocks that are not all zeros
    sha256: str  # of the chunk's whole blocks (zeros around it), for a range of its own


@dataclass
class _Range:
    """The mapped range being built: one chunk's blocks, or (where chunks share a block) several's."""

    first: int
    last: int
    chunk: _Chunk
    joined: hashlib._Hash | None = None  # the running SHA256 once a second chunk shares a block


@dataclass
class SparseFile:
    bmap: BlockMap
    written: int = 0  # bytes written (the rest are holes)
    seconds: float = 0.0
    totals: f.Totals = field(default_factory=f.Totals)


def blocks_of(e: f.Entry) -> tuple[int, int]:
    """The first and last 4 KiB block of the disk that ``e`` touches."""
    return e.offset // BLOCK, (e.end - 1) // BLOCK


def nonzero_runs(data: bytes, offset: int) -> list[tuple[int, int]]:
    """The runs of ``data`` (which starts at disk byte ``offset``) in whole blocks of the disk that
    hold a non-zero byte, as [start, end) in ``data``."""
    runs: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        stop = min(len(data), (offset + pos) // BLOCK * BLOCK + BLOCK - offset)
        block = data[pos:stop]
        if block != (_ZERO_BLOCK if len(block) == BLOCK else bytes(len(block))):
            if runs and runs[-1][1] == pos:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((pos, stop))
        pos = stop
    return runs


def write_sparse(
    image: ImageReader,
    fd: int,
    path: str,
    *,
    threads: int,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SparseFile:
    """The disk of ``image`` into ``fd`` (an empty file, ``path``), holes for zeros; its block map.
    A damaged chunk raises :class:`~recovery.diskimage.reader.BadChunk` (nothing of it is written)."""
    start = time.monotonic()
    size = image.size
    out = SparseFile(BlockMap(size))
    try:
        os.ftruncate(fd, size)
    except OSError as err:
        raise TargetWriteError(f"cannot make {path} {size} bytes long: {err.strerror}") from None

    def work(e: f.Entry) -> _Chunk:
        data = image.decode(e)
        first, last = blocks_of(e)
        padded = hashlib.sha256(bytes(e.offset - first * BLOCK))
        padded.update(data)
        padded.update(bytes(min(size, (last + 1) * BLOCK) - e.end))
        return _Chunk(e, data, nonzero_runs(data, e.offset), padded.hexdigest())

    open_range: _Range | None = None
    last_report = 0.0
    with worked_ahead(image.entries(), work, threads) as chunks:
        for e, job in chunks:
            out.totals.add(e)
            if job is not None:
                chunk = job.result()
                for a, b in chunk.runs:
                    write_all(fd, path, memoryview(chunk.data)[a:b], e.offset + a)
                    out.written += b - a
                open_range = _map(out.bmap, open_range, chunk, size)
            now = time.monotonic()
            if now - last_report > 0.5:
                last_report = now
                on_progress(e.end, size)
                if should_stop():
                    raise Interrupted("interrupted by the user while exporting the image")
    _close(out.bmap, open_range, size)
    on_progress(size, size)
    out.seconds = time.monotonic() - start
    return out


def _map(bmap: BlockMap, open_range: _Range | None, chunk: _Chunk, size: int) -> _Range:
    """Add ``chunk`` to the block map: a range of its own, or the open range when they share a block."""
    first, last = blocks_of(chunk.entry)
    if open_range is None or first > open_range.last:
        _close(bmap, open_range, size)
        return _Range(first, last, chunk)
    if open_range.joined is None:  # the open range's chunk is no longer alone: hash its bytes here
        prev = open_range.chunk.entry
        open_range.joined = hashlib.sha256(bytes(prev.offset - open_range.first * BLOCK))
        open_range.joined.update(open_range.chunk.data)
    open_range.joined.update(bytes(chunk.entry.offset - open_range.chunk.entry.end))
    open_range.joined.update(chunk.data)
    open_range.last, open_range.chunk = last, chunk
    return open_range


def _close(bmap: BlockMap, r: _Range | None, size: int) -> None:
    if r is None:
        return
    if r.joined is None:
        bmap.add(r.first, r.last, r.chunk.sha256)
        return
    r.joined.update(bytes(min(size, (r.last + 1) * BLOCK) - r.chunk.entry.end))
    bmap.add(r.first, r.last, r.joined.hexdigest())
