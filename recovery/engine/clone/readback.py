"""Reading the target back, past the page cache, and checking it.

``used`` mode re-hashes every range that was written and compares it with
the digest that came with it. ``exact`` mode hashes the whole target from
the first byte to the source's size (the same number ``b3sum`` gives for
the source) and compares it with the sender's; only on a mismatch does it
go through the chunks again to name the ranges that differ.

Reads use O_DIRECT where the range is aligned and the filesystem allows it,
otherwise the cache is dropped first (POSIX_FADV_DONTNEED, BLKFLSBUF).
"""

from __future__ import annotations

import heapq
import hmac
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import blake3

from recovery.disks import blockdev
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.pipeline import BufferPool, Crew, Pipe
from recovery.errors import Interrupted, VerificationError

ALIGN = 4096
READ_SIZE = 4 << 20
# Hashing runs on this one thread: BLAKE3 spreads each buffer over the cores.
THREADS = blake3.blake3.AUTO

ProgressFn = Callable[[int, int], None]


@dataclass
class ReadbackResult:
    mismatches: list[tuple[int, int]]
    image_digest: str | None  # exact mode: BLAKE3 of [0, size) as read back
    seconds: float


class DirectReader:
    """Positioned reads of one file or device, bypassing the page cache."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.direct_fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.direct_fd = None
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    def read(self, buf: memoryview, offset: int, length: int) -> memoryview:
        """Bytes [offset, offset+length) as a view into ``buf``; :class:`VerificationError` if they cannot be read."""
        start = offset - offset % ALIGN
        end = -(-(offset + length) // ALIGN) * ALIGN
        lead = offset - start
        if self.direct_fd is not None and end - start <= len(buf):
            # An error here is an unaligned tail or a device refusing O_DIRECT: read buffered.
            got, error = blockdev.pread_into(self.direct_fd, buf[: end - start], start)
            if error is None and got >= lead + length:
                return buf[lead : lead + length]
        got, error = blockdev.pread_into(self.fd, buf[:length], offset)
        if error is not None or got != length:
            why = error.strerror if error is not None else "it ends there"
            raise VerificationError(
                f"the copy could not be verified: {self.path} could not be read back at byte {offset + got}: {why}"
            )
        return buf[:length]

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd is not None:
                os.close(fd)


def _scan(
    path: str,
    ranges: Iterable[tuple[int, int, bytes | None]],
    total: int,
    *,
    whole: blake3.blake3 | None,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
    longest: int = READ_SIZE,
) -> list[tuple[int, int]]:
    """Read ``ranges`` (offset, length, expected digest or None) in a reader
    thread; hash them here; return those that differ. A range with a digest
    is read whole (``longest`` bounds it); others come in pieces."""
    crew = Crew("readback")
    piece = max(READ_SIZE, longest)
    pool = BufferPool(crew, 4, piece + ALIGN)
    done_pipe: Pipe[tuple[int, int, bytes | None, object, memoryview] | None] = Pipe(crew, 3)
    reader = DirectReader(path)

    def read_all() -> None:
        for off, length, expected in ranges:
            pos = 0
            while pos < length:
                n = length if expected is not None else min(piece, length - pos)
                buf = pool.get()
                view = reader.read(memoryview(buf), off + pos, n)
                done_pipe.put((off + pos, n, expected, buf, view))
                pos += n
        done_pipe.put(None)

    bad: list[tuple[int, int]] = []
    crew.spawn(read_all, name="read")
    done = 0
    last = 0.0
    try:
        while (item := done_pipe.get()) is not None:
            off, n, expected, buf, view = item
            if whole is not None:
                whole.update(view)
            if expected is not None and not hmac.compare_digest(
                blake3.blake3(view, max_threads=THREADS).digest(), expected
            ):
                bad.append((off, n))
            del view
            pool.put(buf)  # type: ignore[arg-type]
            done += n
            now = time.monotonic()
            if now - last > 0.5:
                on_progress(done, total)
                last = now
                if should_stop():
                    raise Interrupted("interrupted by the user during read-back verification")
        crew.check()
    except BaseException:
        crew.shutdown()
        crew.check()
        raise
    finally:
        crew.join()
        reader.close()
    on_progress(total, total)
    return _join(bad)


def _join(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in ranges:
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def verify_ranges(
    path: str,
    frames: FrameList,
    *,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool] = lambda: False,
    checked: Mapping[int, tuple[int, int, bool]] | None = None,
    extra: Sequence[tuple[int, int, bytes]] = (),
) -> ReadbackResult:
    """``used`` mode: every written range against its digest. ``checked``: frames (by index) already read
    back and compared (offset, length, matched), not read again; those that did not match count.
    ``extra``: ranges read too (offset, length, digest; in increasing offsets)."""
    start = time.monotonic()
    checked = checked or {}
    bad = _scan(
        path,
        heapq.merge(((o, n, d) for i, (o, n, d, _) in enumerate(frames) if i not in checked), extra),
        frames.covered - sum(n for _, n, _ in checked.values()) + sum(n for _, n, _ in extra),
        whole=None,
        on_progress=on_progress,
        should_stop=should_stop,
        longest=frames.longest(),
    )
    early = [(o, n) for o, n, matched in checked.values() if not matched]
    return ReadbackResult(_join(sorted(bad + early)), None, time.monotonic() - start)


def verify_image(
    path: str,
    size: int,
    expected: str | None,
    frames: FrameList,
    *,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool] = lambda: False,
) -> ReadbackResult:
    """``exact`` mode: BLAKE3 of the whole target; locate differences on a mismatch.

    Without the source's digest (a resumed clone, a rescue) every chunk is
    checked against its digest in the same pass, which then covers the whole target.
    """
    start = time.monotonic()
    whole = blake3.blake3(max_threads=THREADS)
    if expected is None and _contiguous(frames, size):
        found = _scan(
            path,
            ((o, n, d) for o, n, d, _ in frames),
            size,
            whole=whole,
            on_progress=on_progress,
            should_stop=should_stop,
            longest=frames.longest(),
        )
        return ReadbackResult(found, whole.hexdigest(), time.monotonic() - start)
    _scan(
        path,
        ((off, min(READ_SIZE, size - off), None) for off in range(0, size, READ_SIZE)),
        size,
        whole=whole,
        on_progress=on_progress,
        should_stop=should_stop,
    )
    digest = whole.hexdigest()
    bad: list[tuple[int, int]] = []
    if expected is not None and digest != expected:
        bad = _scan(
            path,
            ((o, n, d) for o, n, d, _ in frames),
            size,
            whole=None,
            on_progress=on_progress,
            should_stop=should_stop,
            longest=frames.longest(),
        )
        if not bad:
            bad = [(0, size)]  # the frames match but the whole does not: say so plainly
    elif expected is None:
        bad = _scan(
            path,
            ((o, n, d) for o, n, d, _ in frames),
            size,
            whole=None,
            on_progress=on_progress,
            should_stop=should_stop,
            longest=frames.longest(),
        )
    return ReadbackResult(bad, digest, time.monotonic() - start)


def _contiguous(frames: FrameList, size: int) -> bool:
    """Do the frames cover [0, size) in order, with no gap?"""
    pos = 0
    for offset, length, _, _ in frames:
        if offset != pos:
            return False
        pos += length
    return pos == size
