"""The sending side of one clone: handshake, plan, stream, check the summary."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

from recovery import events
from recovery.disks import identity, usedmap
from recovery.engine import fscheck
from recovery.engine.api import SendOptions
from recovery.engine.chunks import Chunk, plan_chunks
from recovery.engine.health import watched_clone
from recovery.engine.level import LevelController, Sample, level_name
from recovery.engine.progress import CpuSampler, RateMeter, StageSampler, limit
from recovery.engine.sendpipe import SendPipeline
from recovery.engine.session import PeerLink, handshake
from recovery.engine.source import Source, check_source
from recovery.errors import RefusedError, RemoteProtocolError, UsageError, VerificationError
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
    """What can be refused before a link is opened: the chunk size, the source."""
    if not 4096 <= opts.chunk_size <= MAX_CHUNK_SIZE or opts.chunk_size % 4096:
        raise UsageError("the chunk size must be a multiple of 4 KiB, at most 64 MiB")
    check_source(opts.source, allow_mounted=opts.allow_mounted)


def send_disk(conn: Connection, opts: SendOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """Pair on a fresh connection (driving, with ``opts.code``), then send one disk."""
    link = handshake(conn, "sender", code=opts.code, timeout=opts.timeout, sink=sink, cancel=opts.cancel,
                     encrypt=opts.encrypt)
    try:
        summary = run_send(link, opts, sink)
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
    source: Source | None = None
    pipe: SendPipeline | None = None
    try:
        source = Source(opts.source, allow_mounted=opts.allow_mounted)
        sink(events.Phase("map", f"finding what to copy on {source.path} ({opts.mode} mode)"))
        umap = usedmap.build_map(source.path, source.size, opts.mode,
                                 on_progress=lambda text: sink(events.Phase("map", text)))
        for text in umap.warnings:
            sink(events.Warning(text))
        chunks = _ChunkList(umap.extents, opts.chunk_size)
        caps = ctl.state.shared_caps
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
        )
        ctl.send(plan)
        keys = ctl.state.clone_keys(plan.session)
        reply = ctl.expect(m.Accept, m.Refuse)
        if isinstance(reply, m.Refuse):
            raise RefusedError(f"the receiver refused: {reply.message}")
        assert isinstance(reply, m.Accept)
        target_desc = f"{theirs.host.hostname}:{identity.describe(reply.target)}"
        sink(events.PlanMade(
            role="sender", source=identity.describe(source.identity), target=target_desc,
            mode=opts.mode, size=source.size, to_send=chunks.bytes, chunk_size=opts.chunk_size,
            parts=usedmap.part_events(umap.parts), skipped=umap.skipped, encrypted=encrypted,
            verify=opts.verify,
        ))

        sink(events.Phase("transfer", f"sending {chunks.count} chunks"))
        levels = LevelController(opts.level if "zstd" in caps else 0)
        pipe = SendPipeline(source, chunks, chunks.count, conn.data, chunk_size=opts.chunk_size, levels=levels,
                            image_digest=opts.mode == "exact", keys=keys, encrypted=encrypted,
                            workers=opts.workers)
        started = time.monotonic()
        pipe.start()
        durable = 0
        remote = m.Progress(phase="transfer", done=0, total=0)
        rate = RateMeter(chunks.bytes)
        p = pipe
        sampler = StageSampler(
            {"read": lambda: p.read_meter.busy, "compress": lambda: p.work_meter.busy,
             "link": lambda: conn.data.send_seconds, "starved": lambda: p.results.waiting},
            {"compress": opts.workers},
        )
        cpu = CpuSampler()
        last_report = time.monotonic()
        while not pipe.finished.is_set():
            pipe.crew.check()
            msg = ctl.poll(TICK)
            if isinstance(msg, m.Ack):
                durable = msg.bytes
            elif isinstance(msg, m.Progress):
                remote = msg
            if time.monotonic() - last_report >= REPORT_EVERY:
                last_report = time.monotonic()
                shares = sampler.sample()
                levels.update(Sample(link=shares["link"], starved=shares.pop("starved"),
                                     workers=shares["compress"], remote_link=remote.link_busy,
                                     remote_work=remote.work_busy, remote_write=remote.write_busy,
                                     cpu_idle=cpu.idle()))
                if "stages" in caps:
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
        pipe.crew.check()
        pipe.crew.join()
        ctl.send(m.Done(frames=pipe.frames, bytes=pipe.done_bytes, list_digest=pipe.list_digest,
                        source_digest=pipe.image_digest))
        sink(events.Progress(phase="transfer", done=pipe.done_bytes, total=chunks.bytes,
                             rate=rate.average(pipe.done_bytes), eta=0.0, wire=conn.data.bytes_out,
                             durable=durable, level=level_name(levels.level)))
        sink(events.Phase("verify", "waiting for the receiver to flush and read the target back"))
        verify_rate = RateMeter(1)
        while True:
            msg = ctl.poll(TICK)
            if isinstance(msg, m.Progress) and msg.phase == "verify":
                verify_rate.total = msg.total
                verify_rate.update(msg.done)
                sink(events.Progress(phase=msg.phase, done=msg.done, total=msg.total,
                                     rate=verify_rate.rate, eta=verify_rate.eta(msg.done)))
            elif isinstance(msg, m.Summary):
                break
        return _conclude(msg, pipe, source, target_desc, opts, time.monotonic() - started, conn, sink)
    except BaseException as e:  # noqa: BLE001 - re-raised, or the peer's reason instead
        raise link.abandon(e, pipe.crew if pipe else None) from None
    finally:
        if source is not None:
            source.close()


def _encryption(link: PeerLink, opts: SendOptions) -> bool:
    """Seal the payloads? As the user said, else as the link wants; refuse a peer that cannot open them."""
    if not (opts.encrypt if opts.encrypt is not None else link.encrypts):
        return False
    if "aes-gcm" not in link.ctl.state.shared_caps:
        raise RefusedError(f"{link.theirs.host.hostname} cannot decrypt the data (it lists no aes-gcm)",
                           hint="upgrade usb4-recovery there, or send with --no-encrypt")
    return True


def _conclude(
    summary: m.Summary, pipe: SendPipeline, source: Source, target_desc: str, opts: SendOptions,
    seconds: float, conn: Connection, sink: events.EventSink,
) -> events.Summary:
    if summary.list_digest != pipe.list_digest or summary.frames != pipe.frames:
        raise RemoteProtocolError(
            "the receiver's list of chunks differs from what was sent "
            f"({summary.frames} frames, digest {summary.list_digest[:16]}…; "
            f"sent {pipe.frames}, {pipe.list_digest[:16]}…)"
        )
    mismatches = [[r.offset, r.length] for r in summary.mismatches]
    verified = summary.verified
    if opts.mode == "exact" and summary.target_digest is not None and summary.target_digest != pipe.image_digest:
        verified = False
    result = events.Summary(
        role="sender", mode=opts.mode, source=identity.describe(source.identity), target=target_desc,
        size=source.size, bytes_read=source.bytes_read, bytes_sent=conn.data.bytes_out,
        bytes_written=summary.bytes_written, zero_bytes=pipe.zero_bytes, seconds=round(seconds, 3),
        list_digest=pipe.list_digest, image_digest=pipe.image_digest, verified=verified,
        mismatches=mismatches, checks=[dataclasses.asdict(c) for c in summary.checks],
    )
    sink(result)
    if verified is False and not mismatches and fscheck.failures(summary.checks):
        raise fscheck.failure_error(summary.checks, target_desc)
    if verified is False:
        raise VerificationError(
            f"the receiver read the target back and found {len(mismatches)} range(s) that differ",
            ranges=[(a, b) for a, b in mismatches],
            hint="the target disk may be failing; run the clone again or use another disk",
        )
    return result
