"""Checking a whole image: every chunk against its digest, on every core, and (if asked) the disk's BLAKE3.

Opening the image already checked the index, the manifest and the root (:class:`ImageReader`);
this reads every stored chunk, opens, decompresses and hashes it, on every core
(:mod:`recovery.diskimage.ahead`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from recovery.diskimage import format as f
from recovery.diskimage.ahead import worked_ahead
from recovery.diskimage.reader import BadChunk, ImageReader
from recovery.errors import Interrupted

ProgressFn = Callable[[int, int], None]
_ZEROS = bytes(4 << 20)


@dataclass
class Checked:
    totals: f.Totals = field(default_factory=f.Totals)
    bad: list[BadChunk] = field(default_factory=list)
    disk_digest: str | None = None  # BLAKE3 of the whole disk, when asked for
    seconds: float = 0.0


def check_image(
    image: ImageReader,
    *,
    whole: bool = False,
    on_progress: ProgressFn = lambda done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
    threads: int | None = None,
) -> Checked:
    """Every chunk of ``image`` decoded and checked; ``whole``: the disk's BLAKE3 too (as ``b3sum`` of
    the disk gives), zeros wherever no chunk holds a byte."""
    start = time.monotonic()
    result = Checked()
    disk = blake3.blake3(max_threads=blake3.blake3.AUTO) if whole else None
    workers = threads or os.cpu_count() or 2
    pos = 0
    last = 0.0
    with worked_ahead(image.entries(), image.decode, workers) as chunks:
        for e, job in chunks:
            data = None
            try:
                data = job.result() if job is not None else None
            except BadChunk as bad:
                result.bad.append(bad)
            if disk is not None:
                _hash_zeros(disk, e.offset - pos)
                if data is not None:
                    disk.update(data)
                else:
                    _hash_zeros(disk, e.length)  # a zero chunk, or a bad one: the digest will not match
                pos = e.end
            result.totals.add(e)
            now = time.monotonic()
            if now - last > 0.5:
                last = now
                on_progress(e.offset, image.size)
                if should_stop():
                    raise Interrupted("interrupted by the user while checking the image")
    if disk is not None:
        _hash_zeros(disk, image.size - pos)
        result.disk_digest = disk.hexdigest()
    on_progress(image.size, image.size)
    result.seconds = time.monotonic() - start
    return result


def _hash_zeros(h: blake3.blake3, n: int) -> None:
    while n > 0:
        step = min(n, len(_ZEROS))
        h.update(memoryview(_ZEROS)[:step])
        n -= step
