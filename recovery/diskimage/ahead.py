"""Work on every stored chunk of an image on every core, handed back in disk order.

A pool of threads runs ``work`` (decode, and whatever a caller adds: zstd, AES-GCM, BLAKE3 and
hashlib release the GIL) a bounded window ahead of the one thread that takes the results in disk
order, so memory stays a few chunks per thread whatever the image's size. `recovery image verify`
and `recovery image export` both read an image this way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from recovery.diskimage import format as f

T = TypeVar("T")


@contextmanager
def worked_ahead(
    entries: Iterable[f.Entry], work: Callable[[f.Entry], T], threads: int
) -> Iterator[Iterator[tuple[f.Entry, Future[T] | None]]]:
    """Each entry with the future of ``work`` on it (None for a zero chunk: nothing is stored), in the
    order of ``entries``. Leaving the block early cancels what has not started and waits for the rest."""
    pending: deque[tuple[f.Entry, Future[T] | None]] = deque()
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="image-chunk") as pool:

        def results() -> Iterator[tuple[f.Entry, Future[T] | None]]:
            for e in entries:
                pending.append((e, pool.submit(work, e) if e.codec is not f.Codec.ZERO else None))
                while len(pending) > threads * 2:
                    yield pending.popleft()
            while pending:
                yield pending.popleft()

        try:
            yield results()
        finally:
            for _, job in pending:
                if job is not None:
                    job.cancel()
