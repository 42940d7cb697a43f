"""The sending side of one clone: handshake, plan, (resume), stream, check the summary."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

import blake3

from recovery import events
from recovery.disks import identity, usedmap
from recovery.engine.api import SendOptions
from recovery.engine.clone import fscheck
from recovery.engine.clone.chunks import Chunk, plan_chunks
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.health import watched_clone
from recovery.engine.clone.level import LevelController, Sample, level_name
from recovery.engine.clone.progress import CpuSampler, RateMeter, StageSampler, limit
from recovery.engine.clone.recvpipe import RESENDS_PER_CLONE, RESENDS_PER_FRAME
from recovery.engine.clone.sendpipe import Job, SendPipeline
from recovery.engine.clone.source import Source, check_source
from recovery.engine.peer.session import PeerLink, handshake
from recovery.engine.rescue import fsnames
from recovery.engine.rescue.job import RescueJob, plan_jobs
from recovery.engine.rescue.passes import unreadable_error
from recovery.engine.resume import agree
from recovery.errors import (
    RefusedError,
    RemoteProtocolError,
    UnreadableSourceError,
    UsageError,
    VerificationError,
)
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.frames import MAX_CHUNK_SIZE

TICK = 0.25
REPORT_EVERY = 0.5


class _ChunkList:
    """Re-iterable chunks with their count, without holding them all in memory."""

    def __init__(self, extents: list[tuple[int, int]], chunk_size: int) -> None:
        self.extents = extents
        self.chunk_size = chunk_size
        self.count = 0
        self.bytes = 0
        for c in plan_chunks(extents, chunk_size):
            self.count += 1
            self.bytes += c.length

    def __iter__(self) -> Iterator[Chunk]:
        return plan_chunks(self.extents, self.chunk_size)


def check_options(opts: SendOptions) -> None:
    """What can be refused before a link is opened: the chunk size, the source, the rescue's options."""
    if not 4096 <= opts.chunk_size <= MAX_CHUNK_SIZE or opts.chunk_size % 4096:
        raise UsageError(f"the chunk size must be a multiple of 4 KiB, at most {MAX_CHUNK_SIZE >> 20} MiB")
    if not opts.rescue and (opts.mapfile or opts.rescue_time is not None):
        raise UsageError("--mapfile and --rescue-time belong to a rescue: add --rescue")
    if opts.retries < 0 or not opts.fill:
        raise UsageError("--retries must be 0 or more, and --fill must not be empty")
    check_source(opts.source, allow_mounted=opts.allow_mounted)


def send_disk(conn: Connection, opts: SendOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """Pair on a fresh connection (driving, with ``opts.code``), then send one disk."""
    link = handshake(conn, "sender", code=opts.code, timeout=opts.timeout, sink=sink, cancel=opts.cancel,
                     encrypt=opts.encrypt)
    try:
        try:
            summary = run_send(link, opts, sink)
        except UnreadableSourceError:
            link.say_goodbye()
            raise
        if not link.say_goodbye():
            sink(events.Warning("the receiver did not answer the goodbye; its summary had arrived"))
        return summary
    finally:
        link.close()


@watched_clone
def run_send(link: PeerLink, opts: SendOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """Plan, stream and check one clone of a local disk to the peer."""
    check_options(opts)
    conn, ctl, theirs = link.conn, link.ctl, link.theirs
    link.peer_journal = None
    source: Source | None = None
    pipe: SendPipeline | None = None
    rescue: RescueJob | None = None
    try:
        source = Source(opts.source, allow_mounted=opts.allow_mounted)
        sink(events.Phase("map", f"finding what to copy on {source.path} ({opts.mode} mode)"))
        umap = usedmap.build_map(source.path, source.size, opts.mode,
                                 on_progress=lambda text: sink(events.Phase("map", text)))
        for text in umap.warnings:
            sink(events.Warning(text))
        chunks = _ChunkList(umap.extents, opts.chunk_size)
        caps = ctl.state.shared_caps
        if opts.rescue and "rescue" not in caps:
            raise RefusedError(f"{theirs.host.hostname} cannot take a rescue (its usb4-recovery lists no 'rescue')",
                               hint="upgrade usb4-recovery there")
        encrypted = _encryption(link, opts)
        plan = m.Plan(
            session=os.urandom(8).hex(),
            source=source.identity,
            size=source.size,
            mode=opts.mode,  # type: ignore[arg-type]
            chunk_size=opts.chunk_size,
            codecs=("zstd", "raw") if "zstd" in caps else ("raw",),
            map=m.MapSummary(extents=len(umap.extents), bytes=chunks.bytes, digest=umap.digest(),
                             parts=tuple(umap.parts), skipped=umap.skipped),
            frames=chunks.count,
            encrypted=encrypted,
            verify=opts.verify,
            target=opts.target,
            rescue=opts.rescue,
            rescan=opts.rescan and "resume" in caps,
            restart=opts.restart,
        )
        if opts.rescue:
            rescue = RescueJob(source, opts, sink)
        ctl.send(plan)
        keys = ctl.state.clone_keys(plan.session)
        reply = ctl.expect(m.Accept, m.Refuse)
        if isinstance(reply, m.Refuse):
            raise RefusedError(reply.message, hint=reply.hint, peer=theirs.host.hostname)
        assert isinstance(reply, m.Accept)
        target_desc = f"{theirs.host.hostname}:{identity.describe(reply.target)}"
        sink(events.PlanMade(
            role="sender", source=identity.describe(source.identity), target=target_desc,
            mode=opts.mode, size=source.size, to_send=chunks.bytes, chunk_size=opts.chunk_size,
            parts=usedmap.part_events(umap.parts), skipped=umap.skipped, encrypted=encrypted,
            verify=opts.verify,
        ))
        image = blake3.blake3(max_threads=blake3.blake3.AUTO) if opts.mode == "exact" and not opts.rescue else None
        frames, again = FrameList(), []
        if reply.resume is not None:
            agreed = _resume(link, reply.resume, chunks, source, rescue, image, sink)
            frames, again = agreed.frames, agreed.replace
        start = len(frames)
        levels = LevelController(opts.level if "zstd" in caps else 0)
        if rescue is not None:
            jobs = rescue.jobs(chunks, chunks.count, start)
        else:
            jobs = plan_jobs(chunks, chunks.count, start, iter([("resume", again)]) if again else None)
        read = rescue.read if rescue else _plain_reader(source)
        sink(events.Phase("transfer", f"sending {chunks.count - start} chunks"))
        pipe = SendPipeline(read, jobs, conn.data, chunk_size=opts.chunk_size, levels=levels, image=image,
                            keys=keys, encrypted=encrypted, workers=opts.workers, frames=frames)
        started, resumed = time.monotonic(), frames.covered
        summary = _stream(link, pipe, chunks, levels, rescue, umap, source, opts, sink)
        return _conclude(summary, pipe, source, rescue, umap, target_desc, opts, time.monotonic() - started,
                         resumed, conn, sink)
    except BaseException as e:
        if isinstance(e, UnreadableSourceError):
            raise
        error = link.abandon(e, pipe.crew if pipe else None)
        raise agree.resume_hint(error, link.peer_journal, theirs.host.hostname) from None
    finally:
        if pipe is not None:
            pipe.close()
        if rescue is not None:
            rescue.close()
        if source is not None:
            source.close()


def _plain_reader(source: Source):  # type: ignore[no-untyped-def]
    def read(job: Job, view: memoryview) -> None:
        assert job.chunk is not None
        source.read_into(view, job.chunk.offset)

    return read


def _resume(link: PeerLink, offer: m.ResumeOffer, chunks: _ChunkList, source: Source, rescue: RescueJob | None,
            image: blake3.blake3 | None, sink: events.EventSink) -> agree.Agreed:
    """Agree with the receiver where to start, every chunk it holds checked against the source
    (``image``, exact mode, is fed the source's bytes of the chunks the stream does not send)."""
    def read(c: Chunk, view: memoryview) -> bool:
        if rescue is not None:
            if not rescue.rescuer.read_whole(c.offset, view):
                return False  # readable before, not now: it cannot tell whether the source changed
        else:
            source.read_into(view, c.offset)
        for hole_start, hole_len in c.holes:
            view[hole_start : hole_start + hole_len] = bytes(hole_len)
        return True

    link.peer_journal = offer.journal
    first_unknown = None
    if rescue is not None:
        rescue.resumed(chunks, offer.seq, offer.rescued)
        if offer.rescued:
            first_unknown = rescue.first_unknown(chunks, offer.seq)
    agreed = agree.sender_agree(
        link, offer, chunks, read, planned=chunks.count, planned_bytes=chunks.bytes,
        chunk_size=chunks.chunk_size, rescue=rescue is not None,
        skip=(lambda c: not rescue.clean(c)) if rescue is not None else (lambda c: False),
        first_unknown=first_unknown, image=image, sink=sink)
    frames = agreed.frames
    sink(events.Resumed(role="sender", seq=len(frames), bytes=frames.covered, total=chunks.bytes, since=offer.since,
                        replaced=len(agreed.replace)))
    return agreed


def _stream(link: PeerLink, pipe: SendPipeline, chunks: _ChunkList, levels: LevelController,
            rescue: RescueJob | None, umap: usedmap.UsedMap, source: Source, opts: SendOptions,
            sink: events.EventSink) -> m.Summary:
    """Run the pipeline until the receiver's summary: acks, resends, progress, the done of each epoch."""
    conn, ctl = link.conn, link.ctl
    pipe.start()
    durable, epoch, done_sent = 0, 0, False
    resends: dict[int, int] = {}  # frames the receiver asked for again, and how often
    remote = m.Progress(phase="transfer", done=0, total=0)
    rate = RateMeter(chunks.bytes)
    verify_rate = RateMeter(1)
    p = pipe
    sampler = StageSampler(
        {"read": lambda: p.read_meter.busy, "compress": lambda: p.work_meter.busy,
         "link": lambda: conn.data.send_seconds, "starved": lambda: p.results.waiting},
        {"compress": opts.workers},
    )
    cpu = CpuSampler()
    last_report = time.monotonic()
    while True:
        pipe.crew.check()
        msg = ctl.poll(TICK)
        if isinstance(msg, m.Ack):
            durable = msg.bytes
            link.peer_journal = msg.journal
            acked = pipe.acked(msg.seq)
            if rescue is not None:
                rescue.acked([(r.job.chunk, r.note) for r in acked if r.job.chunk is not None])
        elif isinstance(msg, m.Resend):
            resends[msg.seq] = resends.get(msg.seq, 0) + 1
            if resends[msg.seq] > RESENDS_PER_FRAME or sum(resends.values()) > RESENDS_PER_CLONE:
                raise RemoteProtocolError(f"the receiver asked for frame {msg.seq} again, beyond what a damaged "
                                          f"link explains ({RESENDS_PER_FRAME} per frame, {RESENDS_PER_CLONE} "
                                          "per clone)")
            pipe.rewind(msg.seq, msg.epoch)
            epoch, done_sent = msg.epoch, False
            sink(events.Resent(seq=msg.seq, epoch=msg.epoch, reason=msg.reason))
        elif isinstance(msg, m.Progress):
            if msg.phase == "verify":
                verify_rate.total = msg.total
                verify_rate.update(msg.done)
                sink(events.Progress(phase=msg.phase, done=msg.done, total=msg.total,
                                     rate=verify_rate.rate, eta=verify_rate.eta(msg.done)))
            else:
                remote = msg
        elif isinstance(msg, m.CheckSource):
            ctl.send(m.SourceChecked(checks=tuple(_check_source(source, umap, rescue, msg.checks, sink))))
        elif isinstance(msg, m.Summary):
            if not done_sent:
                raise RemoteProtocolError("the receiver sent its summary before the stream ended")
            if rescue is not None:
                rescue.save(final=True)
            return msg
        if not done_sent and pipe.done_in(epoch):
            ctl.send(_done(pipe, epoch, rescue, umap.extents))
            done_sent = True
            sink(events.Progress(phase="transfer", done=pipe.done_bytes, total=chunks.bytes,
                                 rate=rate.average(pipe.done_bytes), eta=0.0, wire=conn.data.bytes_out,
                                 durable=durable, level=level_name(levels.level)))
            sink(events.Phase("verify", "waiting for the receiver to flush and read the target back"))
        if not done_sent and time.monotonic() - last_report >= REPORT_EVERY:
            last_report = time.monotonic()
            shares = sampler.sample()
            levels.update(Sample(link=shares["link"], starved=shares.pop("starved"),
                                 workers=shares["compress"], remote_link=remote.link_busy,
                                 remote_work=remote.work_busy, remote_write=remote.write_busy,
                                 cpu_idle=cpu.idle()))
            if "stages" in ctl.state.shared_caps:
                ctl.send(m.Progress(phase="transfer", done=pipe.done_bytes, total=chunks.bytes,
                                    read_busy=shares["read"], work_busy=shares["compress"],
                                    link_busy=shares["link"]))
            shares.update(decompress=remote.work_busy, write=remote.write_busy)
            rate.update(pipe.done_bytes)
            sink(events.Progress(
                phase="transfer", done=pipe.done_bytes, total=chunks.bytes, rate=rate.rate,
                eta=rate.eta(pipe.done_bytes), wire=conn.data.bytes_out, durable=durable,
                level=level_name(levels.level), stages=shares, bottleneck=limit(shares),
            ))
        if rescue is not None:
            rescue.save()


def _check_source(source: Source, umap: usedmap.UsedMap, rescue: RescueJob | None,
                  failed: tuple[m.FsCheck, ...], sink: events.EventSink) -> list[m.FsCheck]:
    """The receiver's failed checkers, run on this source's partitions (never on a failing one)."""
    if rescue is not None:
        return [dataclasses.replace(c, ok=None, message="not run: the source is failing") for c in failed]
    sink(events.Phase("verify", "running on the source the filesystem checks that failed on the target"))
    return fscheck.check_source(source.path, umap.parts, failed)


def _done(pipe: SendPipeline, epoch: int, rescue: RescueJob | None, extents: list[tuple[int, int]]) -> m.Done:
    bad: list[tuple[int, int]] = []
    if rescue is not None:
        bad = rescue.expected(extents, [(r.job.chunk, r.note) for r in pipe.pending() if r.job.chunk is not None])
    return m.Done(frames=pipe.frames, bytes=pipe.done_bytes, list_digest=pipe.list_digest,
                  source_digest=pipe.image_digest, epoch=epoch, unreadable=sum(n for _, n in bad),
                  unreadable_ranges=tuple(m.Range(offset=o, length=n) for o, n in bad[:1024]))


def _encryption(link: PeerLink, opts: SendOptions) -> bool:
    """Seal the payloads? As the user said, else where this side or the peer wants it (each judges the link
    from its own end); refuse a peer that cannot open them."""
    if not (opts.encrypt if opts.encrypt is not None else link.seals_for_peer()):
        return False
    if "aes-gcm" not in link.ctl.state.shared_caps:
        raise RefusedError(f"{link.theirs.host.hostname} cannot decrypt the data (it lists no aes-gcm)",
                           hint="upgrade usb4-recovery there, or send with --no-encrypt")
    return True


def _conclude(
    summary: m.Summary, pipe: SendPipeline, source: Source, rescue: RescueJob | None, umap: usedmap.UsedMap,
    target_desc: str, opts: SendOptions, seconds: float, resumed: int, conn: Connection, sink: events.EventSink,
) -> events.Summary:
    if summary.list_digest != pipe.list_digest or summary.frames != pipe.frames:
        raise RemoteProtocolError(
            "the receiver's list of chunks differs from what was sent "
            f"({summary.frames} frames, digest {summary.list_digest[:16]}…; "
            f"sent {pipe.frames}, {pipe.list_digest[:16]}…)"
        )
    mismatches = [[r.offset, r.length] for r in summary.mismatches]
    verified = summary.verified
    digest_differs = bool(opts.mode == "exact" and summary.target_digest and pipe.image_digest
                          and summary.target_digest != pipe.image_digest)
    if digest_differs:
        verified = False
    bad = rescue.unreadable(umap.extents) if rescue is not None else []
    hit = fsnames.files_hit(source.path, umap.parts, bad, sink) if bad else []
    result = events.Summary(
        role="sender", mode=opts.mode, source=identity.describe(source.identity), target=target_desc,
        size=source.size, bytes_read=source.bytes_read + (rescue.rescuer.bytes_read if rescue else 0),
        bytes_sent=conn.data.bytes_out, bytes_written=summary.bytes_written, zero_bytes=pipe.zero_bytes,
        seconds=round(seconds, 3), list_digest=pipe.list_digest, image_digest=pipe.image_digest, verified=verified,
        mismatches=mismatches, checks=[dataclasses.asdict(c) for c in summary.checks],
        resends=pipe.resends, resumed=resumed, unreadable=sum(n for _, n in bad),
        unreadable_ranges=[[o, n] for o, n in bad[:1024]], files_hit=hit,
        mapfile=str(rescue.path) if rescue is not None else None, source_digest=pipe.image_digest is not None,
        rescue=rescue is not None,
    )
    sink(result)
    if verified is False and not mismatches and fscheck.failures(summary.checks):
        raise fscheck.failure_error(summary.checks, target_desc).kept(summary.kept_as)
    if verified is False and digest_differs and not mismatches:
        raise VerificationError(f"the target read back whole ({target_desc}) does not give the source's BLAKE3",
                                hint="run the clone again").kept(summary.kept_as)
    if verified is False:
        raise VerificationError(
            f"the receiver read the target back and found {len(mismatches)} range(s) that differ",
            ranges=[(a, b) for a, b in mismatches],
            hint="the target disk may be failing; run the clone again or use another disk",
        ).kept(summary.kept_as)
    if bad:
        raise unreadable_error(result.unreadable, bad, rescue.path if rescue else None)
    return result
