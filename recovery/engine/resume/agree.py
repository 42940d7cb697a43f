"""Agreeing where a clone resumes (capability "resume"), on both sides.

The receiver reads its journal for the target (:mod:`recovery.engine.resume.journal`)
and decides: the journal does not match the target (another disk, or the
disk was written since) or was made for another source: it is ignored, with
a message, and the clone starts from the beginning; the same source has
changed since (its partition tables or its map): refused, unless the sender
asked for a ``--rescan``; else it offers the frames the target holds, in its
``accept``, and sends their digests.

The sender reads every one of those chunks from the source (at disk speed;
nothing crosses the link) and compares its BLAKE3 with the receiver's, so a
resumed clone is checked against the source as a whole, like one that was
never interrupted (an exact clone's whole-source BLAKE3 included). A chunk
that differs (the source changed, or the target holds what a hostile peer
once sent) is sent again: with capability "replace", as a replacement after
the first pass, else by starting the stream at the first chunk that
differs. In rescue mode a failing disk is read as little as possible: only
a sample of those chunks is compared (one at random in each eighth of them,
and the last two), a difference starts the stream there, and it starts no
later than the first chunk its mapfile does not cover, so nothing the
mapfile does not know of is skipped. Its ``start`` names the first frame it
sends, and how many replace others.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import blake3

from recovery import events
from recovery.engine.clone.chunks import Chunk
from recovery.engine.clone.framelist import FrameList
from recovery.engine.peer.session import PeerLink
from recovery.engine.resume import journal
from recovery.errors import LinkError, RefusedError, RemoteProtocolError
from recovery.protocol import delta as wire
from recovery.protocol import messages as m
from recovery.protocol.frames import DIGEST_SIZE, Kind, max_frames, zero_digest
from recovery.units import human_size

RESTART_HINT = (
    "run the sender with --rescan to go on (every chunk is compared with the source and what differs "
    "sent again), or the receiver with --restart to start over"
)


def resume_hint(error: BaseException, journal_path: str | None, keeper: str) -> BaseException:
    """A lost link, where the receiver's journal (at ``journal_path`` on the machine ``keeper``)
    holds part of the clone: say how to go on. Without a journal that holds it, say nothing."""
    if isinstance(error, LinkError) and error.hint is None and journal_path:
        error.hint = (
            "run the same commands again: the clone resumes where the target's durable data ends "
            f"({keeper} records how far it got in {journal_path})"
        )
    return error


@dataclass
class Offer:
    """What the receiver found it may resume."""

    found: journal.Found
    offer: m.ResumeOffer


def receiver_offer(
    plan: m.Plan, found: journal.Found | None, target_fd: int, target_size: int, sink: events.EventSink
) -> Offer | None:
    """Decide on the journal found for this target (see the module's doc). ``target_fd`` -1: the target
    is an image file, whose own records were found (each checked as it was read, none held back)."""
    if found is None or (not found.problems and not len(found.frames)) or found.kept:
        return None  # nothing was durable, or the clone ended (a record, for a delta): nothing to resume
    where = found.path
    if found.problems:
        sink(events.Warning(f"a resume journal was found but cannot be used: {'; '.join(found.problems)}"))
        return None
    head = found.head
    # The held frames first: without them the partition-table areas cannot be written at the end,
    # whatever the target holds elsewhere (and the sample never reads those areas).
    why = (
        None
        if target_fd < 0
        else _held_missing(found, plan.size) or journal.target_changed(found, target_fd, target_size)
    )
    if why:
        sink(
            events.Warning(
                f"{where} describes an unfinished clone onto this target, but {why}: "
                "not resumed, the clone starts from the beginning"
            )
        )
        return None
    other = _other_clone(head, plan)
    if other:
        sink(events.Warning(f"the unfinished clone on this target was {other}: the clone starts from the beginning"))
        return None
    same_plan = head.get("plan") == journal.plan_digest(plan)
    # A failing disk's partition-table areas may read differently from one run to the next (a bad
    # sector comes back): between rescues only the map and the sample of chunks say it is the same.
    same_tables = head.get("source_fp") == plan.source.fingerprint or (plan.rescue and head.get("rescue"))
    if not same_plan or not same_tables:
        what = "its partition tables" if same_plan else "what it has to copy (its filesystems' maps)"
        if not plan.rescan:
            raise RefusedError(
                f"the source changed since the interrupted clone of {head.get('since', '?')}: {what} differ",
                hint=RESTART_HINT,
            )
        if not same_plan:
            sink(
                events.Warning(
                    f"the source changed since the interrupted clone ({what} differ): every chunk is sent again"
                )
            )
            return None
    if head.get("rescue") and not plan.rescue:
        raise RefusedError(
            "the interrupted clone onto this target ran in rescue mode: resume it with --rescue",
            hint="or start over with --restart on the receiver",
        )
    if found.complete and not plan.rescue:
        raise RefusedError(
            f"this target holds the clone already, finished with {human_size(found.unreadable)} the "
            "source could not read",
            hint="run the sender with --rescue to try those areas again, or the receiver with --restart to start over",
        )
    offer = m.ResumeOffer(
        seq=len(found.frames),
        bytes=found.frames.covered,
        since=str(head.get("since", ""))[:64],
        complete=found.complete,
        rescued=bool(head.get("rescue")),
        journal=str(found.path),
    )
    return Offer(found, offer)


def _other_clone(head: dict[str, Any], plan: m.Plan) -> str | None:
    """How the clone a journal heading describes is not one of this plan's source and layout (None: it is)."""
    if head.get("source") != journal.hardware(plan.source):
        return f"of {head.get('source_desc', 'another disk')}, not of this source"
    if head.get("layout") != journal.layout_digest(plan):
        return f"made in {head.get('mode')} mode with {head.get('chunk_size')}-byte chunks, this one is not"
    return None


def _held_missing(found: journal.Found, target_size: int) -> str | None:
    """Why the edge frames the journal counts as durable are not all held (their bytes are written only
    at the end of a clone, from the journal's held file), or None."""
    held = {h.offset for h, _ in found.held}
    edge = [found.frames.record(i)[0] for i in journal.edge_indexes(found.frames, target_size)]
    missing = [o for o in edge if o not in held]
    if missing:
        return f"the bytes of its partition-table area at {missing[0]} were not kept"
    return None


def send_digests(link: PeerLink, frames: FrameList) -> None:
    for first in range(0, len(frames), m.DIGEST_PAGE):
        stop = min(len(frames), first + m.DIGEST_PAGE)
        text = "".join(frames.digest(i).hex() for i in range(first, stop))
        link.ctl.send(m.Digests(first=first, digests=text))


def receive_digests(link: PeerLink, count: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < count:
        page = link.ctl.expect(m.Digests)
        assert isinstance(page, m.Digests)
        text = page.digests
        if page.first != len(out) or len(text) % (2 * DIGEST_SIZE) or len(out) + len(text) // 64 > count:
            raise RemoteProtocolError(f"the receiver's digests do not follow on (page at {page.first})")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise RemoteProtocolError("the receiver's digests are not hexadecimal") from None
        out += [raw[i : i + DIGEST_SIZE] for i in range(0, len(raw), DIGEST_SIZE)]
    return out


ChunkReader = Callable[[Chunk, memoryview], bool]  # False: it cannot be read now


@dataclass
class Agreed:
    """Where the sender's stream starts, and what the target keeps of what it holds."""

    frames: FrameList  # the frames the target holds that stay (the stream starts after them)
    replace: list[Chunk]  # of those, the chunks that differ from the source: sent again after the first pass


def sender_agree(
    link: PeerLink,
    offer: m.ResumeOffer,
    chunks: Iterable[Chunk],
    read: ChunkReader,
    *,
    planned: int,
    planned_bytes: int,
    chunk_size: int,
    rescue: bool = False,
    sample: bool = False,
    skip: Callable[[Chunk], bool] = lambda c: False,
    always: Callable[[Chunk], bool] = lambda c: False,
    first_unknown: int | None = None,
    image: blake3.blake3 | None = None,
    sink: events.EventSink = events.ignore,
) -> Agreed:
    """Check every chunk the receiver holds against the source; send ``start``.

    A chunk that differs is sent again: as a replacement after the first pass
    when the peer takes one (capability "replace", not in rescue mode), else
    the stream starts at the first that differs. ``skip``: chunks that cannot
    be compared (rescue: they hold unreadable areas); ``always``: chunks a
    sample includes (rescue: those its mapfile could not call finished yet). ``rescue``: the plan is
    a rescue (no replacement pass). ``sample``: compare a sample only (a
    failing source, read as little as possible). ``first_unknown``: the first
    chunk the mapfile does not cover. ``image`` (exact mode, not a rescue):
    fed the source's bytes of every chunk the stream does not send again.
    """
    k = offer.seq
    if k > planned or offer.bytes > planned_bytes:  # before any digest is read: they would be held
        raise RemoteProtocolError(
            f"the receiver offers to resume at frame {k} ({offer.bytes} bytes), beyond "
            f"this plan's {planned} frames ({planned_bytes} bytes)"
        )
    digests = receive_digests(link, k)
    frames = FrameList()
    picked: list[Chunk] = []
    for c in chunks:
        if c.seq >= k:
            break
        kind = Kind.ZERO if digests[c.seq] == zero_digest(c.length) else Kind.DATA
        frames.append(c.offset, c.length, digests[c.seq], kind)
        picked.append(c)
    if len(frames) != k or frames.covered != offer.bytes:
        raise RemoteProtocolError(
            f"the receiver holds {k} frames ({offer.bytes} bytes), which is not how this source's plan begins"
        )
    sink(
        events.Phase(
            "resume",
            f"the target holds {human_size(offer.bytes)} of an interrupted clone of "
            f"{offer.since or 'before'}: reading the source to check every chunk of it",
        )
    )
    replacing = "replace" in link.ctl.state.shared_caps and not rescue
    stop = first_unknown if first_unknown is not None else k
    which = picked[:stop]
    if sample:
        picks = set(journal.sample_indexes(len(which), {c.seq for c in which if skip(c)}))
        picks |= {i for i, c in enumerate(which) if always(c) and not skip(c)}
        which = [which[i] for i in sorted(picks)]
        image = None
    differ = _compare(which, digests, read, chunk_size, skip, image, stop_at_first=not replacing, sink=sink)
    start = stop if replacing or not differ else differ[0].seq
    if start < k:
        frames.truncate(start)
    replace = differ if replacing else []
    link.ctl.send(m.Start(seq=start, replace=len(replace)))
    again = f"; {len(replace)} chunk(s) that differ from the source are sent again" if replace else ""
    sink(
        events.Phase(
            "resume",
            f"resuming at chunk {start} of the plan: {human_size(frames.covered)} "
            f"already on the target are not sent again{again}",
        )
    )
    return Agreed(frames, replace)


def _compare(
    picked: list[Chunk],
    digests: list[bytes],
    read: ChunkReader,
    chunk_size: int,
    skip: Callable[[Chunk], bool],
    image: blake3.blake3 | None,
    *,
    stop_at_first: bool,
    sink: events.EventSink,
) -> list[Chunk]:
    """Read every chunk of ``picked`` from the source and compare it with the target's digest: the
    chunks that differ (only the first with ``stop_at_first``; ``image`` is then fed no further)."""
    buf = mmap.mmap(-1, chunk_size)  # page-aligned: it may be read past the page cache
    differ: list[Chunk] = []
    last = time.monotonic()
    total = sum(c.length for c in picked)
    done = 0
    for c in picked:
        view = memoryview(buf)[: c.length]
        got = None
        if not skip(c) and read(c, view):
            got = blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest()
        if got is not None and got != digests[c.seq]:
            differ.append(c)
            sink(
                events.Phase(
                    "resume",
                    f"chunk {c.seq} (at {human_size(c.offset)}) is not what the source holds now: it is sent again",
                )
            )
            if stop_at_first:
                return differ
        if image is not None:
            image.update(view)
        done += c.length
        if time.monotonic() - last > 0.5:
            last = time.monotonic()
            sink(events.Progress(phase="rescan", done=done, total=total, rate=0.0, eta=None))
    return differ


# --- delta clones (capability "delta") ---


@dataclass
class Delta:
    """What the receiver found its target holds of an earlier clone of this source: a disk's record
    (``found``), or an earlier image's digests (``offered``, all trusted)."""

    found: journal.Found | None
    offer: m.DeltaOffer
    offered: FrameList | None = None


def delta_offer(
    plan: m.Plan,
    found: journal.Found | None,
    target_fd: int,
    target_size: int,
    sink: events.EventSink,
    *,
    rechecked: bool = False,
) -> Delta | None:
    """The delta to offer for the record ``found`` (a journal kept after a clean clone), or None, saying
    why when there is a record that cannot be used. It is trusted when the target still matches it (its
    fingerprint, a sample of its chunks and each partition's first bytes read back), else its chunks are
    hashed from the target (:func:`delta_frames`). ``rechecked``: every chunk offered is read back during
    the stream and repaired where it differs, so no chunk is sampled at random (but the first bytes)."""
    if found is None or not found.kept or found.problems:
        return None
    head = found.head
    was = head.get("source_desc", "another disk")
    other = _other_clone(head, plan)
    if other:
        sink(events.Warning(f"this target holds a copy {other}: all of it is sent"))
        return None
    starts = {p.start + k for p in plan.map.parts for k in (0, 1024, 65536)}
    why = journal.target_changed(found, target_fd, target_size, starts, sample=not rechecked)
    if why:
        sink(
            events.Warning(
                f"the copy of {was} on this target changed since it was made ({why}): "
                "its chunks are read and hashed to find what is unchanged"
            )
        )
    edge = journal.edge_indexes(found.frames, target_size)
    offer = m.DeltaOffer(
        frames=len(found.frames) - len(edge),
        bytes=found.frames.covered - sum(found.frames.length(i) for i in edge),
        since=str(head.get("kept_at", ""))[:64],
        source_desc=str(was)[:255],
        trusted=why is None,
    )
    return Delta(found, offer)


def delta_frames(
    delta: Delta, target_fd: int, target_size: int, erased: list[tuple[int, int]], sink: events.EventSink
) -> FrameList:
    """What the receiver offers: the record's frames outside the partition-table areas (which every clone
    writes), with their digests from the record when it is trusted, else read from the target now, as
    are those of frames in ``erased`` (the ranges the clone's preparation just zeroed)."""
    assert delta.found is not None
    frames = delta.found.frames
    skip = set(journal.edge_indexes(frames, target_size))
    offered = FrameList()
    buf = mmap.mmap(-1, max(frames.longest(), 1))
    done, last = 0, time.monotonic()
    for i in range(len(frames)):
        offset, length, digest, _ = frames.record(i)
        if i in skip:
            continue
        if not delta.offer.trusted or any(o < offset + length and offset < o + n for o, n in erased):
            digest = _target_digest(target_fd, memoryview(buf)[:length], offset)
            done += length
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                sink(events.Progress(phase="delta", done=done, total=frames.covered, rate=0.0, eta=None))
        offered.append(offset, length, digest, Kind.ZERO if digest == zero_digest(length) else Kind.DATA)
    return offered


def _target_digest(fd: int, view: memoryview, offset: int) -> bytes:
    """The BLAKE3 of the target's bytes at ``offset``; one no chunk hashes to when they cannot be read."""
    try:
        if os.preadv(fd, [view], offset) == len(view):
            return blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest()
    except OSError:
        pass
    return bytes(DIGEST_SIZE)  # the sender finds no chunk with this digest: it sends the chunk


def send_offered(link: PeerLink, offered: FrameList) -> None:
    """The receiver's delta digests, each with its range."""
    for page in wire.encode_pages([(o, n, d) for o, n, d, _ in offered]):
        link.ctl.send(page)


def receive_offered(
    link: PeerLink, offer: m.DeltaOffer, chunks: Iterable[Chunk], chunk_size: int, size: int
) -> FrameList:
    """The sender's side: the receiver's delta digests, checked page by page (:mod:`recovery.protocol.delta`),
    of which only those at exactly a planned chunk's range are kept (at most the plan's own frames)."""
    if offer.frames > max_frames(size, chunk_size):  # before any page is read
        raise RemoteProtocolError(f"the receiver offers {offer.frames} digests, more than a {size}-byte disk holds")
    kept = FrameList()
    planned = iter(chunks)
    chunk = next(planned, None)
    got, after = 0, 0
    while got < offer.frames:
        page = link.ctl.expect(m.Digests)
        assert isinstance(page, m.Digests)
        entries = wire.decode_page(page, got, after, chunk_size, size)
        if not entries or got + len(entries) > offer.frames:
            raise RemoteProtocolError(f"the receiver sends more delta digests than the {offer.frames} it offered")
        got += len(entries)
        after = entries[-1][0] + entries[-1][1]
        for offset, length, digest in entries:
            while chunk is not None and chunk.offset < offset:
                chunk = next(planned, None)
            if chunk is not None and (chunk.offset, chunk.length) == (offset, length):
                kept.append(offset, length, digest, Kind.ZERO if digest == zero_digest(length) else Kind.DATA)
    return kept
