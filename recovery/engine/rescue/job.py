"""The sending side of a rescue: the reader, its mapfile, and what to send when.

The mapfile is the target's state in ddrescue's format
(:mod:`recovery.engine.rescue.sectormap`), rewritten atomically as the job runs
(every :data:`WRITE_EVERY` seconds when something changed, when a pass
begins, and at the end, however the clone ends: a resume then starts where the
last ack left it). It lives at ``--mapfile PATH``, or by default next
to the job logs, named by the source; an existing one of the same source is
continued, so a second run tries only the areas the first could not read.

The mapfile never claims what the target does not hold: the receiver holds
the chunks of the plan's first and last MiB back until the clone ends
(:data:`recovery.engine.clone.target.EDGE`: an interrupted clone never
looks like a valid disk), so until then they are written as ``?`` where
they were read, though acknowledged (their bad areas keep their status).
GNU ddrescue continuing from the mapfile of an interrupted rescue then
reads them again; a resume of this tool compares them with the source
instead, and what matches is finished.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from recovery import events
from recovery.engine.api import SendOptions
from recovery.engine.clone.chunks import Chunk
from recovery.engine.clone.sendpipe import Job, JobKind
from recovery.engine.clone.source import Source
from recovery.engine.clone.target import EDGE
from recovery.engine.joblog import default_dir
from recovery.engine.rescue.passes import Note, RescueOptions, Rescuer, extents_of
from recovery.engine.rescue.sectormap import (
    FINISHED,
    NON_TRIED,
    MapFormatError,
    MapStatus,
    SectorMap,
    heading,
    read_mapfile,
    write_mapfile,
)
from recovery.engine.resume import journal
from recovery.errors import UsageError
from recovery.protocol.messages import Identity

WRITE_EVERY = 10.0


def default_mapfile(directory: Path | None, source: Identity) -> Path:
    name = Path(source.path).name or "source"
    return (directory or default_dir()) / f"rescue-{name}-{journal.target_key(source)[:12]}.map"


def plan_jobs(
    chunks: Iterable[Chunk], count: int, start: int, later: Iterator[tuple[str, list[Chunk]]] | None = None
) -> Iterator[Job]:
    """The first pass's chunks from ``start`` on, then each later pass's replacements, then END."""
    for c in chunks:
        if c.seq >= start:
            yield Job(c.seq, JobKind.CHUNK, c)
    seq = count
    for _, improved in later or ():
        yield Job(seq, JobKind.PASS)
        seq += 1
        for c in improved:
            yield Job(seq, JobKind.REPLACE, c)
            seq += 1
    yield Job(seq, JobKind.END)


def _redacted(args: list[str]) -> list[str]:
    """The command line without the pairing code, for a mapfile that outlives the job."""
    out: list[str] = []
    hide = False
    for arg in args:
        if hide:
            out.append("…")
        elif arg.startswith("--code="):
            out.append("--code=…")
        else:
            out.append(arg)
        hide = arg == "--code"
    return out


class RescueJob:
    def __init__(self, source: Source, opts: SendOptions, sink: events.EventSink) -> None:
        self.sink = sink
        self.path = Path(opts.mapfile) if opts.mapfile else default_mapfile(opts.log_dir, source.identity)
        self.started = time.time()
        self.command = shlex.join(["recovery", *_redacted(sys.argv[1:])]) if sys.argv[1:] else "recovery send --rescue"
        known = None
        self.loaded = False
        if os.path.lexists(self.path):  # a link there is refused by read_mapfile, never followed
            try:
                known, _ = read_mapfile(self.path, source.size)
            except MapFormatError as e:
                raise UsageError(
                    f"{self.path} cannot be continued: {e}",
                    hint="move it away to start a new mapfile, or give another with --mapfile",
                ) from None
            self.loaded = True
        sector = source.identity.sector_size or 512
        self.rescuer = Rescuer(
            source.path,
            source.size,
            sector,
            RescueOptions(retries=self.retries(opts.retries), budget=opts.rescue_time, fill=opts.fill),
            known=known,
            durable=known.copy() if known else None,
            sink=sink,
        )
        self._held: list[tuple[int, int]] = []  # acknowledged, but held back by the receiver until the end
        self._confirmed: set[int] = set()  # chunks a resume read again whole (compared with the target)
        self._written_at = 0.0
        self._dirty = True
        self._phase = self.rescuer.phase
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sink(events.Phase("rescue", f"mapfile {self.path}" + (" (continuing it)" if self.loaded else "")))

    def retries(self, asked: int | None) -> int:
        """Retry passes: as asked; by default none (as ddrescue), but one when continuing a mapfile (a
        second run is asked to try the bad sectors again)."""
        if asked is not None:
            return asked
        return 1 if self.loaded else 0

    # --- before streaming ---

    def resumed(self, chunks: Iterable[Chunk], start: int, rescued: bool) -> None:
        """A resume at ``start``, once agreed (checked against the source): the target holds the chunks
        before it. What this side's mapfile does not know of becomes finished where they were read whole:
        all of them if no rescue wrote them (``rescued`` false), else those the resume read again whole
        and found the same on the target. What it records as not read stays as it is (the receiver's word
        never makes the mapfile claim more)."""
        r = self.rescuer
        for c in chunks:
            if c.seq >= start:
                break
            if self.held_back(c):
                self._held += extents_of(c)
            if not rescued or c.offset in self._confirmed:
                for pos, n in extents_of(c):
                    for smap in (r.known, r.durable):
                        for bpos, bn, status in list(smap.blocks(pos, pos + n)):
                            if status == NON_TRIED:
                                smap.set(bpos, bn, FINISHED)
        r.load_bad_chunks(c for c in chunks if c.seq < start)
        self._dirty = True

    def first_unknown(self, chunks: Iterable[Chunk], count: int) -> int:
        """The first of the first ``count`` chunks that the mapfile does not cover: a resume starts there."""
        for c in chunks:
            if c.seq >= count:
                break
            if self.held_back(c):
                continue  # written as not tried until the clone ended: the resume compares it instead
            if any(s == NON_TRIED for pos, n in extents_of(c) for _, _, s in self.rescuer.durable.blocks(pos, pos + n)):
                return c.seq
        return count

    def held_back(self, c: Chunk) -> bool:
        """Does the receiver hold ``c`` back until the clone ends (it is in the plan's first or last MiB)?"""
        return c.offset < EDGE or c.end > self.rescuer.size - EDGE

    def confirm(self, c: Chunk, view: memoryview) -> bool:
        """Read ``c`` whole for a resume's comparison with the target; False if it cannot be read now."""
        if not self.rescuer.read_whole(c.offset, view):
            return False
        self._confirmed.add(c.offset)
        return True

    def damaged(self, c: Chunk) -> bool:
        """Does the mapfile record part of ``c`` as not read (so a resume cannot compare it with the target's)?"""
        return any(
            s not in (FINISHED, NON_TRIED)
            for pos, n in extents_of(c)
            for _, _, s in self.rescuer.durable.blocks(pos, pos + n)
        )

    def jobs(self, chunks: Iterable[Chunk], count: int, start: int) -> Iterator[Job]:
        return plan_jobs(chunks, count, start, self.rescuer.passes())

    def read(self, job: Job, view: memoryview) -> Note:
        assert job.chunk is not None
        return self.rescuer.read(job.chunk, view)

    # --- while streaming (the session thread) ---

    def acked(self, notes: Sequence[tuple[Chunk, Note]]) -> None:
        if notes:
            self.rescuer.on_durable(notes)
            self._held += [e for c, _ in notes if self.held_back(c) for e in extents_of(c)]
            self._dirty = True
        self.save()

    def save(self, *, final: bool = False, now: bool = False) -> None:
        """Write the mapfile if something changed and it is time (or the phase changed, or ``final``);
        ``now``: whenever something changed (the clone stops: what the receiver acked must be in it)."""
        phase = self.rescuer.phase
        due = time.monotonic() - self._written_at >= WRITE_EVERY or phase != self._phase or final or now
        if not (due and (self._dirty or phase != self._phase or final)):
            return
        self.rescuer.refine()
        status, number = phase
        write_mapfile(
            self.path,
            self.rescuer.durable if final else self._on_target(),
            MapStatus(self.rescuer.position if not final else 0, FINISHED if final else status, number),
            heading(self.command, self.started),
        )
        self._written_at, self._dirty, self._phase = time.monotonic(), False, phase

    def _on_target(self) -> SectorMap:
        """The durable map as the target holds it while the clone runs: the held-back areas not yet."""
        with self.rescuer.lock:
            shown = self.rescuer.durable.copy()
        for pos, n in self._held:
            for bpos, bn, status in list(shown.blocks(pos, pos + n)):
                if status == FINISHED:
                    shown.set(bpos, bn, NON_TRIED)
        return shown

    def expected(
        self, extents: Sequence[tuple[int, int]], pending: Sequence[tuple[Chunk, Note]]
    ) -> list[tuple[int, int]]:
        """The unreadable ranges the target will hold once ``pending`` frames are written."""
        r = self.rescuer
        with r.lock:
            saved = r.durable.copy()
        try:
            r.on_durable(pending)
            r.refine()
            return r.unreadable(extents)
        finally:
            with r.lock:
                r.durable = saved

    def unreadable(self, extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        self.rescuer.refine()
        return self.rescuer.unreadable(extents)

    @property
    def map(self) -> SectorMap:
        return self.rescuer.durable

    def close(self) -> None:
        self.rescuer.close()
