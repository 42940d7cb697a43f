"""Rescue mode: copy what a failing source can still give, the way GNU ddrescue does.

The first pass reads every chunk of the plan with large reads, the good
areas first. Where a read fails, the rest of its range is read in 64 KiB
clusters, and so is everything up to :data:`CALM` bytes after an error;
each cluster that fails is marked *non-trimmed* and filled, the device is
opened again (the kernel shrinks its read-ahead on a file after an error),
and reading goes on after it. Only then, in later passes, the bad
areas are worked on, with reads of one logical sector each (O_DIRECT, so a
bad sector does not take the rest of its page with it), and only inside
them:

- *trimming*: each non-trimmed area is read sector by sector from both ends
  inwards until a sector fails; what is between becomes *non-scraped*;
- *scraping*: every sector of each non-scraped area is read once;
- *retrying*: each bad sector is read again, ``retries`` passes (none by
  default, as in ddrescue).

So no failed read is repeated at its size but by a retry pass, and a lone
bad sector near other errors costs two failed reads (its cluster, then its
sector while trimming), as in ddrescue.

A time budget bounds the later passes: it is checked before each of their
reads, so a large bad area cannot outlast it; what was not tried by then
keeps its status (``*``, ``/``, ``-``), as ddrescue leaves it. Each pass
that recovered something re-sends the chunks it improved (a PASS frame,
then replacements), from the bytes their reads kept (up to
:data:`KEEP_MAX`), not read again. What stays unreadable is filled (zeros
or a pattern) and listed.

Two maps are kept (:mod:`recovery.engine.rescue.sectormap`): what the reads found
(``known``, the read thread's), and what the target holds (``durable``,
from the receiver's acknowledgements), which is what the mapfile says: an
area is "finished" there only once the frame carrying it is on the target.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from recovery import events
from recovery.disks import blockdev
from recovery.engine.clone.chunks import Chunk
from recovery.engine.rescue.sectormap import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, SectorMap
from recovery.errors import SourceReadError, UnreadableSourceError
from recovery.units import human_size

CLUSTER = 64 << 10  # after a failed large read, the range is read in pieces of this size (ddrescue's)
CALM = 64 << 20  # after a read error, the first pass reads in clusters until this much read cleanly
KEEP_MAX = 256 << 20  # bytes of chunks with bad areas kept in memory: later passes need not read them again
MIB = 1 << 20
SKIP_MAX = MIB  # fill written in pieces of this size
WARN_ERRORS = 10  # read errors of the first pass that are also warnings (all go to the mapfile)
READ_ERRNOS = {errno.EIO, errno.ENODATA, errno.EBADMSG, errno.EILSEQ, errno.ENXIO, errno.ETIMEDOUT}

Note = list[tuple[int, int, str]] | None  # a chunk's statuses as sent; None: all of it was read


@dataclass(frozen=True)
class RescueOptions:
    retries: int = 0  # retry passes over the bad sectors (ddrescue's default too)
    budget: float | None = None  # seconds for the passes after the first (None: no limit)
    fill: bytes = b"\0"  # written where nothing could be read


def extents_of(c: Chunk) -> list[tuple[int, int]]:
    """The ranges of a chunk that are read (not its holes), as (pos, size)."""
    out, pos = [], c.offset
    for start, length in c.holes:
        if c.offset + start > pos:
            out.append((pos, c.offset + start - pos))
        pos = c.offset + start + length
    if c.end > pos:
        out.append((pos, c.end - pos))
    return out


class Rescuer:
    """Reads a failing source by the map; see the module's doc."""

    def __init__(
        self,
        path: str,
        size: int,
        sector: int,
        opts: RescueOptions,
        *,
        known: SectorMap | None = None,
        durable: SectorMap | None = None,
        sink: events.EventSink = events.ignore,
    ) -> None:
        self.path, self.size, self.sector, self.opts, self.sink = path, size, sector, opts, sink
        self.known = known or SectorMap(size)
        self.durable = durable or self.known.copy()
        self.lock = threading.Lock()
        self.fd = self.direct_fd = -1
        self._open()
        self._sector_buf = mmap.mmap(-1, max(4096, sector))
        self.bad_chunks: dict[int, Chunk] = {}
        self._bad_offsets: list[int] = []
        self._improved: set[int] = set()
        self._kept: dict[int, bytearray] = {}  # chunks with bad areas as read so far, by offset
        self._kept_bytes = 0
        self._last_error = -CALM  # where the first pass last failed
        self.errors = 0  # failed reads
        self.bytes_read = 0
        self.reopens = 0
        self.phase = (NON_TRIED, 1)  # (current_status, pass) for the mapfile's status line
        self.position = 0
        self.out_of_time = False
        self._deadline = float("inf")  # when the later passes' time budget is spent
        each = (opts.fill * (sector // len(opts.fill) + 1))[:sector]  # the pattern starts again in each sector
        self._fill = each * (SKIP_MAX // sector)

    # --- descriptors ---

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if self.fd >= 0:
            same = os.path.samestat(os.fstat(fd), os.fstat(self.fd))
            os.close(self.fd)
            if not same:
                os.close(fd)
                raise SourceReadError(f"{self.path} is another device now: the source was unplugged or replaced")
        self.fd = fd
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
        try:
            self.direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.direct_fd = -1

    def reopen(self) -> None:
        """After an error: a fresh open file, whose read-ahead starts again at full size."""
        self._open()
        self.reopens += 1

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.direct_fd = -1

    # --- the first pass (the read thread) ---

    def load_bad_chunks(self, chunks: Iterator[Chunk]) -> None:
        """A resumed rescue: the chunks the loaded map has bad areas in."""
        for c in chunks:
            if any(
                s not in (FINISHED, NON_TRIED)
                for e in extents_of(c)
                for _, _, s in self.known.blocks(e[0], e[0] + e[1])
            ):
                self.bad_chunks[c.offset] = c

    def read(self, c: Chunk, view: memoryview) -> Note:
        """Fill ``view`` with chunk ``c`` as far as it can be read; the statuses its bytes have. A chunk
        with bad areas that was read before comes from what its reads kept: the disk is not read again."""
        kept = self._kept.get(c.offset)
        if kept is not None:
            view[:] = kept
            return self._statuses(c)
        clean = True
        for pos, n in extents_of(c):
            for bpos, bn, status in list(self.known.blocks(pos, pos + n)):
                if status in (FINISHED, NON_TRIED):
                    clean = self._large(view, c.offset, bpos, bn) and clean
                else:
                    self._fill_in(view, bpos - c.offset, bn)
                    clean = False
        self.position = c.end
        if clean:
            return None
        self.bad_chunks[c.offset] = c
        if self._kept_bytes + c.length <= KEEP_MAX:
            self._kept[c.offset] = bytearray(view)
            self._kept_bytes += c.length
        return self._statuses(c)

    def _statuses(self, c: Chunk) -> Note:
        with self.lock:
            return [b for pos, n in extents_of(c) for b in self.known.blocks(pos, pos + n)]

    def _large(self, view: memoryview, base: int, pos: int, n: int) -> bool:
        """Read [pos, pos+n) in large reads; mark what failed non-trimmed. True if all of it was read.

        Past the page cache where the range allows (O_DIRECT): a buffered read fails a whole page, or
        the kernel's whole read-ahead window, for one bad sector in it. A direct read fails whole, so
        after a failure the rest of the range is read in clusters of :data:`CLUSTER` bytes, and only
        the clusters that fail are left for later passes. Near an earlier error (bad areas come in
        groups) it is read in clusters from the start, as ddrescue does: a bad sector there then costs
        one failed cluster, not a failed large read and a failed cluster.
        """
        end, clean = pos + n, True
        cluster = pos - self._last_error < CALM
        while pos < end:
            direct = (
                self.direct_fd >= 0
                and pos % self.sector == 0
                and (end - pos) % self.sector == 0
                and (pos - base) % self.sector == 0
            )
            stop = min(end, pos + CLUSTER) if cluster else end
            k, e = blockdev.pread_once(self.direct_fd if direct else self.fd, view[pos - base : stop - base], pos)
            if k:
                with self.lock:
                    self.known.set(pos, k, FINISHED)
                pos += k
                self.bytes_read += k
            if e is None:
                if k == 0:
                    raise SourceReadError(f"the source {self.path} ended at byte {pos}, expected {self.size}")
                cluster = cluster or pos < stop  # it stopped short (at a bad sector, likely): go on in clusters
                continue
            if direct and e.errno == errno.EINVAL:
                self.direct_fd = -1  # this device or file takes no O_DIRECT: read through the cache
                continue
            if e.errno not in READ_ERRNOS:
                raise SourceReadError(f"cannot read the source {self.path} at byte {pos}: {e.strerror}")
            if direct and not cluster and stop - pos > CLUSTER:
                cluster = True  # narrow it down
                continue
            pos -= pos % self.sector
            stop = min(end, -(-(pos + CLUSTER) // self.sector) * self.sector)
            with self.lock:
                self.known.set(pos, stop - pos, NON_TRIMMED)
            self._fill_in(view, pos - base, stop - pos)
            self.errors += 1
            self._last_error = pos
            if self.errors <= WARN_ERRORS:
                more = "; further read errors go to the mapfile only" if self.errors == WARN_ERRORS else ""
                self.sink(
                    events.Warning(
                        f"cannot read the source at byte {pos} ({human_size(pos)}): "
                        f"{e.strerror}; its bad area is left for later passes{more}"
                    )
                )
            self.reopen()
            pos, clean = stop, False
        return clean

    def read_whole(self, pos: int, view: memoryview) -> bool:
        """Read ``len(view)`` bytes at ``pos`` past the page cache (no read-ahead on a failing disk);
        False if they cannot be read now. Changes no map."""
        fd = self.direct_fd if self.direct_fd >= 0 and pos % self.sector == 0 else self.fd
        got, e = blockdev.pread_into(fd, view, pos)
        if e is not None and fd == self.direct_fd and e.errno == errno.EINVAL:
            got, e = blockdev.pread_into(self.fd, view, pos)  # O_DIRECT refused: read through the cache
        if e is not None and e.errno not in READ_ERRNOS:
            raise SourceReadError(f"cannot read the source {self.path} at byte {pos + got}: {e.strerror}")
        if e is not None or got < len(view):
            return False
        self.bytes_read += got
        return True

    def _fill_in(self, view: memoryview, at: int, n: int) -> None:
        """Fill ``n`` bytes at ``at`` (sector-aligned on the source) with the pattern."""
        while n > 0:
            k = min(n, SKIP_MAX)
            view[at : at + k] = memoryview(self._fill)[:k]
            at, n = at + k, n - k

    # --- the later passes (the read thread, after the first pass) ---

    def passes(self) -> Iterator[tuple[str, list[Chunk]]]:
        """Run trimming, scraping and the retries; after each, the chunks it improved."""
        steps: list[tuple[str, str, Callable[[int, int], None]]] = [
            ("trimming", NON_TRIMMED, self._trim),
            ("scraping", NON_SCRAPED, self._scrape),
        ]
        steps += [("retrying", BAD, self._retry)] * self.opts.retries
        if self.opts.budget is not None:
            self._deadline = time.monotonic() + self.opts.budget
        for number, (name, status, work) in enumerate(steps, 2):
            areas = self.known.ranges(status)
            if not areas or self._spent():
                continue
            self.phase = (status, number - 1)
            self.sink(events.Phase("rescue", f"{name} {len(areas)} area(s), {human_size(sum(n for _, n in areas))}"))
            self._improved = set()
            self._bad_offsets = sorted(self.bad_chunks)
            for pos, n in areas:
                if self._spent():
                    break
                work(pos, n)
            improved = [self.bad_chunks[o] for o in sorted(self._improved)]
            if improved:
                yield name, improved
        self.phase = (FINISHED, self.phase[1])

    def _spent(self) -> bool:
        """Is the time budget spent? Checked before every read of the later passes; says so once."""
        if self.out_of_time or time.monotonic() < self._deadline:
            return self.out_of_time
        self.out_of_time = True
        with self.lock:
            untried = self.known.total(NON_TRIED + NON_TRIMMED + NON_SCRAPED)
        self.sink(
            events.Warning(
                f"time budget spent: {untried / MIB:.1f} MiB not tried (--rescue-time {self.opts.budget:g} s); "
                "the mapfile keeps them as not tried, not trimmed or not scraped, and a later run tries them"
            )
        )
        return True

    def _sector_ok(self, pos: int) -> bool:
        """Read one logical sector; record what it gave."""
        view = memoryview(self._sector_buf)[: self.sector]
        fd = self.direct_fd if self.direct_fd >= 0 else self.fd
        self.position = pos
        got, e = blockdev.pread_into(fd, view, pos)
        if e is not None:
            if e.errno == errno.EINVAL and fd == self.direct_fd:
                self.direct_fd = -1  # O_DIRECT refused: read through the cache
                return self._sector_ok(pos)
            if e.errno not in READ_ERRNOS:
                raise SourceReadError(f"cannot read the source {self.path} at byte {pos}: {e.strerror}")
            self.errors += 1
            with self.lock:
                self.known.set(pos, self.sector, BAD)
            return False
        if got < self.sector:
            raise SourceReadError(f"the source {self.path} ended at byte {pos + got}, expected {self.size}")
        with self.lock:
            self.known.set(pos, self.sector, FINISHED)
        self.bytes_read += self.sector
        self._mark_improved(pos, view)
        return True

    def _mark_improved(self, pos: int, data: memoryview) -> None:
        """The sector at ``pos`` was read: its chunk is to be sent again, with ``data`` in it."""
        offsets = self._bad_offsets
        i = bisect.bisect_right(offsets, pos) - 1
        if i >= 0 and pos < self.bad_chunks[offsets[i]].end:
            self._improved.add(offsets[i])
            kept = self._kept.get(offsets[i])
            if kept is not None:
                at = pos - offsets[i]
                kept[at : at + len(data)] = data

    def _trim(self, pos: int, n: int) -> None:
        end, first_bad = pos + n, None
        p = pos
        while p < end:
            if self._spent():
                return  # the rest stays non-trimmed
            if not self._sector_ok(p):
                first_bad = p
                break
            p += self.sector
        if first_bad is None:
            return
        q = end - self.sector
        while q > first_bad:
            if self._spent():
                return  # between the sectors tried, it stays non-trimmed
            if not self._sector_ok(q):
                break
            q -= self.sector
        if q - first_bad > self.sector:
            with self.lock:
                self.known.set(first_bad + self.sector, q - first_bad - self.sector, NON_SCRAPED)

    def _scrape(self, pos: int, n: int) -> None:
        for p in range(pos, pos + n, self.sector):
            if self._spent():
                return  # the rest keeps its status
            self._sector_ok(p)

    _retry = _scrape

    # --- what the target holds (the session thread) ---

    def on_durable(self, notes: Sequence[tuple[Chunk, Note]]) -> None:
        """Frames carrying these chunks are on the target: the mapfile may say so."""
        with self.lock:
            for c, note in notes:
                parts = note if note is not None else [(p, n, FINISHED) for p, n in extents_of(c)]
                for pos, n, status in parts:
                    if status == FINISHED:
                        self.durable.set(pos, n, FINISHED)
                        continue
                    for kpos, kn, known in list(self.known.blocks(pos, pos + n)):
                        self.durable.set(kpos, kn, status if known == FINISHED else known)

    def refine(self) -> None:
        """What later reads learnt about areas still unread on the target (bad, not just untried)."""
        with self.lock:
            for pos, n, status in list(self.known.blocks()):
                if status in (BAD, NON_SCRAPED, NON_TRIMMED):
                    for dpos, dn, d in list(self.durable.blocks(pos, pos + n)):
                        if d not in (FINISHED, NON_TRIED):
                            self.durable.set(dpos, dn, status)

    def unreadable(self, extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The plan's ranges the target does not hold from the source (filled)."""
        with self.lock:
            return self.durable.ranges(NON_TRIMMED + NON_SCRAPED + BAD, extents)


def unreadable_error(total: int, ranges: list[tuple[int, int]], mapfile: object = None) -> UnreadableSourceError:
    """The clone's outcome when the source could not be read everywhere (exit 14)."""
    where = f"; the mapfile {mapfile} lists them" if mapfile else ""
    return UnreadableSourceError(
        f"the clone completed, but {human_size(total)} ({total} bytes, in {len(ranges)} range(s)) of the source "
        f"could not be read: they are filled on the target{where}; everything else was verified",
        unreadable=total,
        ranges=ranges,
        hint="run the same command again (with --rescue) to retry only those areas; the summary names the "
        "files they hit",
    )
