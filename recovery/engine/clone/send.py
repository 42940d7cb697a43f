"""The sending side of one clone: plan, propose, (resume), stream, check the receiver's summary."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import blake3

from recovery import events, run
from recovery.disks import fitplan, identity, safety, usedmap
from recovery.engine.api import SendOptions
from recovery.engine.clone import finish, fscheck
from recovery.engine.clone.chunks import Chunk, plan_chunks
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.health import watched_clone
from recovery.engine.clone.imagesource import ImageSource, open_source
from recovery.engine.clone.level import LevelController, Sample, level_name
from recovery.engine.clone.pipeline import TICK
from recovery.engine.clone.progress import (
    REPORT_EVERY,
    CpuSampler,
    CpuShare,
    ProcessorWait,
    RateMeter,
    StageSampler,
    limit,
)
from recovery.engine.clone.sendpipe import Job, SendPipeline
from recovery.engine.clone.source import Source, check_source
from recovery.engine.fit import fitted
from recovery.engine.fit.view import check_tools, default_scratch
from recovery.engine.imagemount import served_disk
from recovery.engine.peer.session import PeerLink, handshake
from recovery.engine.rescue import fsnames
from recovery.engine.rescue.job import RescueJob, plan_jobs
from recovery.engine.rescue.passes import unreadable_error
from recovery.engine.resume import agree
from recovery.errors import (
    RecoveryError,
    RefusedError,
    RemoteProtocolError,
    ToolError,
    UnreadableSourceError,
    UsageError,
)
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.limits import (
    CHUNK_ALIGN,
    MAX_CHUNK_SIZE,
    MAX_PASSES,
    MAX_REPAIR_BYTES,
    RESENDS_PER_CLONE,
    RESENDS_PER_FRAME,
)
from recovery.protocol.values import MapPart
from recovery.units import human_size


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


def check_fit_options(opts: SendOptions) -> None:
    """--fit: not with a mounted source (its copy would be inconsistent), the tools it runs installed, an
    overlay folder that exists and is not on the source."""
    if opts.allow_mounted:
        raise UsageError("a mounted source is not fitted: --fit and --allow-mounted do not go together")
    for tool, package in fitted.TOOLS.items():
        run.need_tool(tool, package)
    check_tools()
    scratch = opts.scratch or default_scratch()
    if not os.path.isdir(scratch):
        raise UsageError(f"--scratch {scratch} is not a folder")
    try:
        on_source = identity.folder_on(identity.identify(opts.source), scratch)
    except OSError:
        on_source = False  # the source's own checks say what is wrong with it
    if on_source:
        raise UsageError(
            f"the overlay's folder {scratch} is on the source {opts.source}, which is never written",
            hint="give --scratch a folder on another disk (or in RAM)",
        )


def check_options(opts: SendOptions) -> None:
    """What can be refused before a link is opened: the chunk size, the source, the rescue's options."""
    if not CHUNK_ALIGN <= opts.chunk_size <= MAX_CHUNK_SIZE or opts.chunk_size % CHUNK_ALIGN:
        raise UsageError(f"the chunk size must be a multiple of 4 KiB, at most {MAX_CHUNK_SIZE >> 20} MiB")
    if not opts.rescue and (opts.mapfile or opts.rescue_time is not None):
        raise UsageError("--mapfile and --rescue-time belong to a rescue: add --rescue")
    if opts.fit not in fitplan.FITS:
        raise UsageError(f"--fit is one of {', '.join(fitplan.FITS)}, not {opts.fit!r}")
    if opts.fit != "keep" and opts.rescue:
        raise UsageError(
            "a failing disk is not resized: --fit and --rescue do not go together",
            hint="rescue it onto a disk at least its size first, then clone that one with --fit",
        )
    if opts.fit != "keep":
        check_fit_options(opts)
    elif opts.sizes:
        raise UsageError("--size sizes partitions of a fitted clone: add --fit shrink or --fit grow")
    if (opts.retries is not None and opts.retries < 0) or not opts.fill:
        raise UsageError("--retries must be 0 or more, and --fill must not be empty")
    check_source(opts.source, allow_mounted=opts.allow_mounted)


def _fails_on(source: str, p: fitplan.Placed, name: str) -> bool:
    """Does the partition fail this check where it lies on the source?"""
    part = MapPart(number=p.number, start=p.start, size=p.size, fstype=p.fstype)
    return any(c.check == name and c.ok is False for c in fscheck.check_filesystem(source, part))


def check_fit_target(source: m.Identity, target: m.Identity) -> None:
    """What a target to fit to must be, as the receiver described it: a whole disk (not a file, which takes
    any size, nor a partition), with the source's logical sectors, a whole number of them."""
    if target.kind != "disk":
        raise UsageError(
            f"the target {target.path} is a {target.kind}: --fit needs a whole disk", hint="send without --fit"
        )
    why = safety.sector_mismatch(source, target)
    sector = target.sector_size or 512
    if why or target.size <= 0 or target.size % sector:
        raise RefusedError(
            f"cannot fit the source to {target.path}: {why or f'its size {target.size} is not whole sectors'}"
        )


def send_disk(conn: Connection, opts: SendOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """Pair on a fresh connection (driving, with ``opts.code``), then send one disk."""
    link = handshake(
        conn, "sender", code=opts.code, timeout=opts.timeout, sink=sink, cancel=opts.cancel, encrypt=opts.encrypt
    )
    try:
        try:
            summary = run_send(link, opts, sink)
        except UnreadableSourceError:
            link.say_goodbye()
            raise
        except RecoveryError as e:
            if link.idle:  # refused here before a plan crossed (fitting it, say): the receiver hears why
                link.tell(e)
            raise
        if not link.say_goodbye():
            sink(events.Warning("the receiver did not answer the goodbye; its summary had arrived"))
        return summary
    finally:
        link.close()


@watched_clone
def run_send(link: PeerLink, opts: SendOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """The steps of a clone on the sending side: plan (the source and its map), propose (the receiver
    accepts or refuses), agree where to start (a resume), stream until the receiver's summary, conclude."""
    check_options(opts)
    clone = _Sending(link, opts, sink)
    try:
        clone.plan()
        clone.propose()
        clone.agree()
        summary = clone.stream()
        return clone.conclude(summary)
    except UnreadableSourceError:
        raise  # the clone ran to its end: both summaries are out
    except BaseException as e:  # noqa: BLE001 - re-raised as the first error, told to the peer
        raise clone.failed(e) from None
    finally:
        clone.release()


class _Sending:
    """One clone on the sending side: the state its steps share, and its clean-up."""

    def __init__(self, link: PeerLink, opts: SendOptions, sink: events.EventSink) -> None:
        self.link, self.opts, self.sink = link, opts, sink
        self.caps = link.ctl.state.shared_caps
        link.peer_journal = None
        self.source: Source | None = None
        self.rescue: RescueJob | None = None
        self.pipe: SendPipeline | None = None
        self.loop: _SendLoop | None = None
        self.frames = FrameList()  # what the target holds already (a resume)
        self.again: list[Chunk] = []  # of those, chunks that differ from the source: sent again
        self.offered: FrameList | None = None  # a delta: what the target holds of an earlier clone
        self.image: blake3.blake3 | None = None  # exact mode: the whole source, hashed in order
        self.target_desc = ""
        self.started = time.monotonic()
        self.wire_start = link.conn.data.bytes_out  # the session's earlier clones are not this one's
        self.hit: tuple[list[tuple[int, int]], list[dict[str, Any]]] | None = None  # rescue: bad ranges, files
        self.fitting = contextlib.ExitStack()  # --fit: the fitted disk's view, ended with the clone
        self.fitting_done = False  # the source is a fitted disk: a resume compares every chunk
        self.resized: set[int] = set()  # of those, the partitions resized (and then checked) on it
        self.measured: m.Identity | None = None  # the target the receiver said it has: pinned in the plan

    @property
    def wire(self) -> int:
        """Bytes this clone put on the data channel."""
        return self.link.conn.data.bytes_out - self.wire_start

    def files_hit(self, bad: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """The files the unreadable ranges hit, found once per list of ranges."""
        if not bad:
            return []
        if self.hit is None or self.hit[0] != bad:
            self.hit = (bad, fsnames.files_hit(self.source_.path, self.umap.parts, bad, self.sink))
        return self.hit[1]

    def plan(self) -> None:
        """Open the source, map what to copy, and make the plan (and, in rescue mode, the rescue job)."""
        opts, sink, caps = self.opts, self.sink, self.caps
        source = self.source = open_source(
            opts.source,
            allow_mounted=opts.allow_mounted,
            passphrase=opts.passphrase,
            rescue=opts.rescue,
            image_only=opts.image_only,
        )
        if opts.fit != "keep":
            source = self.source = self._fit(source)
        sink(events.Phase("map", f"finding what to copy on {source.path} ({opts.mode} mode)"))
        if isinstance(source, ImageSource):
            umap = self.umap = source.used_map(opts.mode)
            rescued = source.rescued_words()
            if rescued:
                sink(events.Warning(rescued))
        else:
            umap = self.umap = usedmap.build_map(
                source.path,
                source.size,
                opts.mode,
                on_progress=lambda text: sink(events.Phase("map", text)),
                failing=opts.rescue,
                ignore_check=self.resized,  # checked once resized (_check_fitted)
            )
        for text in umap.warnings:
            sink(events.Warning(text))
        chunks = self.chunks = _ChunkList(umap.extents, opts.chunk_size)
        if opts.rescue and "rescue" not in caps:
            raise RefusedError(
                f"{self.link.peer_name} cannot take a rescue (its usb4-recovery lists no 'rescue')",
                hint="upgrade usb4-recovery there",
            )
        self.the_plan = m.Plan(
            session=os.urandom(8).hex(),
            source=source.identity,
            size=source.size,
            mode=opts.mode,  # type: ignore[arg-type]
            chunk_size=opts.chunk_size,
            codecs=("zstd", "raw") if "zstd" in caps else ("raw",),
            map=m.MapSummary(
                extents=len(umap.extents),
                bytes=chunks.bytes,
                digest=umap.digest(),
                parts=tuple(umap.parts),
                skipped=umap.skipped,
            ),
            frames=chunks.count,
            encrypted=_encryption(self.link, opts),
            verify=opts.verify,
            target=opts.target or self.measured,  # the receiver refuses a target that changed since
            rescue=opts.rescue,
            rescan=(opts.rescan or self.fitting_done) and "resume" in caps,  # a fitted disk is made anew
            restart=opts.restart,
            image=opts.image,
            passphrase=opts.image_passphrase if opts.image else None,
            delta=opts.delta and "delta" in caps and not opts.rescue,
        )
        if opts.rescue:
            self.rescue = RescueJob(source, opts, sink)

    def _fit(self, source: Source) -> Source:
        """``--fit shrink|grow``: the receiver's target measured, the layout planned and shown, and the fitted
        disk (made on a copy-on-write view) to read instead of the source, which is never written."""
        target = self.opts.target or self._measure()  # a target the driving user chose says its size
        self.measured = target
        check_fit_target(source.identity, target)
        self.fitting.callback(source.close)  # an image's reader serves its disk until the clone ends
        disk_path = source.path
        foreign = isinstance(source, ImageSource)  # its bytes came from elsewhere: never mounted here
        if isinstance(source, ImageSource):  # its disk as a read-only file, fitted like a disk
            disk_path = self.fitting.enter_context(served_disk(source.reader))
        say = lambda text: self.sink(events.Phase("fit", text))  # noqa: E731
        fit: fitplan.Fit = self.opts.fit  # type: ignore[assignment]  # one of them: check_options
        layout = fitted.plan(disk_path, source.size, target.size, fit, say, foreign=foreign, sizes=self.opts.sizes)
        self.sink(events.FitPlanned(
            fit=layout.fit, source_size=layout.source_size, target_size=layout.target_size,
            parts=[dataclasses.asdict(p) for p in layout.parts],
        ))  # fmt: skip
        if not layout.changed:
            return source
        disk = self.fitting.enter_context(
            fitted.fitted_disk(disk_path, source.size, layout, self.opts.scratch, self.sink, self.opts.cancel)
        )
        self.fitting_done = True
        self._check_fitted(disk_path, disk, layout)
        own = identity.identify(disk)
        pinned = dataclasses.replace(source.identity, size=own.size, fingerprint=own.fingerprint)
        return Source(disk, identity=pinned)

    def _check_fitted(self, source: str, path: str, layout: fitplan.Layout) -> None:
        """Each filesystem that was resized or moved, checked on the fitted disk (``path``) before anything is
        sent: a resizing tool (or the view) that broke one fails here, never on the target. A partition that
        only moved and fails as it fails on the ``source`` was moved as it is (a warning)."""
        for p in layout.parts:
            if not (p.moved or p.resized):
                continue
            self.sink(events.Phase("fit", f"checking partition {p.number} ({p.fstype}) on the fitted copy"))
            part = MapPart(number=p.number, start=p.new_start, size=p.new_size, fstype=p.fstype)
            for check in fscheck.check_filesystem(path, part):
                if check.ok is None:
                    self.sink(events.Warning(f"partition {p.number} was not checked once fitted: {check.message}"))
                elif not check.ok:
                    if not p.resized and _fails_on(source, p, check.check):
                        self.sink(events.Warning(
                            f"partition {p.number} fails {check.check} on the source too: it was moved as it is"
                        ))  # fmt: skip
                        continue
                    raise ToolError(
                        f"partition {p.number} ({p.fstype}) fails {check.check} once fitted ({check.message}); "
                        "nothing was written to the target and the source is unchanged"
                    )
            if p.resized:
                self.resized.add(p.number)

    def _measure(self) -> m.Identity:
        """The target as the receiver opened it (capability "fit")."""
        if "fit" not in self.caps:
            raise RefusedError(
                f"{self.link.peer_name} cannot say what its target is (its usb4-recovery lists no 'fit')",
                hint="upgrade usb4-recovery there, or send without --fit",
            )
        self.link.ctl.send(m.Measure())
        reply = self.link.ctl.expect(m.Measured)
        assert isinstance(reply, m.Measured)
        if reply.target is None:
            raise RefusedError(reply.refused or "the receiver did not say what its target is", peer=self.link.peer_name)
        return reply.target

    def propose(self) -> None:
        """Send the plan; the receiver accepts (perhaps offering a resume) or refuses, saying why."""
        plan, ctl = self.the_plan, self.link.ctl
        ctl.send(plan)
        reply = ctl.expect(m.Accept, m.Refuse)
        if isinstance(reply, m.Refuse):
            raise RefusedError(reply.message, hint=reply.hint, peer=self.link.peer_name)
        assert isinstance(reply, m.Accept)
        self.accept = reply
        self.target_desc = f"{self.link.peer_name}:{identity.describe(reply.target)}"
        self.sink(
            events.PlanMade(
                role="sender",
                source=identity.describe(plan.source),
                target=self.target_desc,
                mode=plan.mode,
                size=plan.size,
                to_send=plan.map.bytes,
                chunk_size=plan.chunk_size,
                parts=usedmap.part_events(self.umap.parts),
                skipped=plan.map.skipped,
                encrypted=plan.encrypted,
                verify=plan.verify,
            )
        )

    def agree(self) -> None:
        """Where the stream starts: at the beginning, or after what the target holds of an interrupted clone,
        every chunk of it checked against the source (the whole-source hash fed as it goes)."""
        if self.opts.mode == "exact" and not self.opts.rescue:
            self.image = blake3.blake3(max_threads=blake3.blake3.AUTO)
        if self.accept.delta is not None:
            self._take_delta(self.accept.delta)
        offer = self.accept.resume
        if offer is None:
            return
        agreed = _resume(self.link, offer, self.chunks, self.source_, self.rescue, self.image, self.sink)
        self.frames, self.again = agreed.frames, agreed.replace

    def _take_delta(self, offer: m.DeltaOffer) -> None:
        """The receiver's target holds an earlier clone of this source: its digests, those of this plan's
        chunks kept; a chunk that hashes the same goes as a SAME frame."""
        plan = self.the_plan
        if not plan.delta or self.accept.resume is not None:
            raise RemoteProtocolError("the receiver offers a delta this plan did not ask for")
        self.offered = agree.receive_offered(self.link, offer, self.chunks, plan.chunk_size, plan.size)
        self.sink(
            events.DeltaOffered(
                role="sender",
                since=offer.since,
                source=offer.source_desc,
                trusted=offer.trusted,
                bytes=self.offered.covered,
            )
        )
        self.sink(
            events.Phase(
                "transfer",
                f"{self.target_desc} holds a copy of this disk from {offer.since or 'earlier'}: "
                f"only the chunks that differ from its {human_size(self.offered.covered)} are sent",
            )
        )

    def _takes_blocks(self) -> bool:
        """Does the receiver take BLOCKS frames? Only where it said so, in a delta that may repair."""
        offer = self.accept.delta
        if offer is None or not offer.blocks:
            return False
        if not {"delta-blocks", "delta-repair", "resend"} <= set(self.caps):
            raise RemoteProtocolError("the receiver offers to take BLOCKS frames, which this clone does not allow")
        return True

    @property
    def source_(self) -> Source:
        assert self.source is not None
        return self.source

    def stream(self) -> m.Summary:
        """The pipeline from the first chunk to send until the receiver's summary."""
        chunks, opts, start = self.chunks, self.opts, len(self.frames)
        levels = LevelController(opts.level if "zstd" in self.caps else 0)
        if self.rescue is not None:
            jobs = self.rescue.jobs(chunks, chunks.count, start)
        else:
            jobs = plan_jobs(chunks, chunks.count, start, iter([("resume", self.again)]) if self.again else None)
        read = self.rescue.read if self.rescue else _plain_reader(self.source_)
        self.sink(events.Phase("transfer", f"sending {chunks.count - start} chunks"))
        self.resumed = self.frames.covered
        self.pipe = SendPipeline(
            read,
            jobs,
            self.link.conn.data,
            chunk_size=opts.chunk_size,
            levels=levels,
            image=self.image,
            keys=self.link.ctl.state.clone_keys(self.the_plan.session),
            encrypted=self.the_plan.encrypted,
            workers=opts.workers,
            frames=self.frames,
            offered=self.offered,
            blocks=self._takes_blocks(),
        )
        self.started = time.monotonic()
        self.loop = _SendLoop(self, levels)
        return self.loop.run()

    def conclude(self, summary: m.Summary) -> events.Summary:
        """Check the receiver's summary against what was sent; the verdict, as this side's summary or its error."""
        pipe, source, rescue, opts = self.pipe, self.source_, self.rescue, self.opts
        assert pipe is not None
        if summary.list_digest != pipe.list_digest or summary.frames != pipe.frames:
            raise RemoteProtocolError(
                "the receiver's list of chunks differs from what was sent "
                f"({summary.frames} frames, digest {summary.list_digest[:16]}…; "
                f"sent {pipe.frames}, {pipe.list_digest[:16]}…)"
            )
        differs = finish.whole_digest_differs(opts.mode, summary.target_digest, pipe.image_digest)
        verified = False if differs else summary.verified
        bad = rescue.unreadable(self.umap.extents) if rescue is not None else []
        result = events.Summary(
            role="sender",
            mode=opts.mode,
            source=identity.describe(source.identity),
            target=self.target_desc,
            size=source.size,
            bytes_read=source.bytes_read + (rescue.rescuer.bytes_read if rescue else 0),
            bytes_sent=self.wire,
            bytes_written=summary.bytes_written,
            zero_bytes=pipe.zero_bytes if summary.zero_bytes is None else summary.zero_bytes,  # the receiver's
            seconds=summary.seconds or round(time.monotonic() - self.started, 3),
            list_digest=pipe.list_digest,
            image_digest=pipe.image_digest,
            verified=verified,
            mismatches=[[r.offset, r.length] for r in summary.mismatches],
            checks=[dataclasses.asdict(c) for c in summary.checks],
            resends=pipe.resends,
            resumed=self.resumed,
            unreadable=sum(n for _, n in bad),
            unreadable_ranges=[[o, n] for o, n in bad[:1024]],
            files_hit=self.files_hit(bad),
            mapfile=str(rescue.path) if rescue is not None else None,
            source_digest=pipe.image_digest is not None,
            rescue=rescue is not None,
            planned=self.chunks.bytes,
            unchanged=pipe.same_bytes,
        )
        if bad:
            for check in fscheck.failures(summary.checks):
                self.sink(events.Warning(fscheck.damage_found(check, self.umap.parts)))
        self.sink(result)
        if verified is False:
            raise finish.failure(
                self.target_desc,
                [(r.offset, r.length) for r in summary.mismatches],
                summary.checks,
                differs,
                summary.kept_as,
            )
        if bad:
            raise unreadable_error(result.unreadable, bad, rescue.path if rescue else None)
        return result

    def failed(self, error: BaseException) -> BaseException:
        """The error to raise: the first one (the pipeline's own before the lost link it caused), told to
        the peer; how to go on, if the receiver's journal holds part of the clone."""
        if self.loop is not None:
            self.loop.stopped()
        error = self.link.abandon(error, self.pipe.crew if self.pipe else None)
        return agree.resume_hint(error, self.link.peer_journal, self.link.peer_name)

    def release(self) -> None:
        if self.rescue is not None:
            self._keep_mapfile(self.rescue)
        for part in (self.pipe, self.rescue, self.source):
            if part is not None:
                part.close()
        self.fitting.close()

    def _keep_mapfile(self, rescue: RescueJob) -> None:
        """Whatever ended the clone: the mapfile says what the receiver acked, so that a resume (which
        starts no later than the first chunk the mapfile does not cover) starts there."""
        try:
            rescue.save(now=True)
        except (OSError, RecoveryError) as e:
            self.sink(events.Warning(f"the mapfile {rescue.path} could not be written: {e}"))


class _SendLoop:
    """The session thread while the pipeline streams: acks, resends, progress, the done of each epoch,
    a source check the receiver asks for, until the receiver's summary."""

    def __init__(self, clone: _Sending, levels: LevelController) -> None:
        assert clone.pipe is not None
        self.clone, self.pipe, self.levels = clone, clone.pipe, levels
        self.ctl, self.sink, self.rescue = clone.link.ctl, clone.sink, clone.rescue
        self.durable, self.epoch, self.done_sent = clone.frames.covered, 0, False
        self.source_checked = False  # the receiver may ask once per clone
        self.resends: dict[int, int] = {}  # frames the receiver asked for again, and how often
        self.repairs = 0  # a delta's repair rounds asked for
        self.remote = m.Progress(phase="transfer", done=0, total=0)  # the receiver's shares
        pipe, data = self.pipe, clone.link.conn.data
        self.rate = RateMeter(clone.chunks.bytes, done=pipe.done_bytes)  # a resume's part was not sent now
        self.verify_rate = RateMeter(1)
        self.read_cpu, self.waits = CpuShare(pipe.read_meter), ProcessorWait()
        self.sampler = StageSampler(
            {
                "read": lambda: pipe.read_meter.busy,
                "compress": lambda: pipe.work_meter.busy,
                "link": lambda: data.send_seconds,
                "starved": lambda: pipe.results.waiting,
            },
            {"compress": clone.opts.workers},
        )
        self.cpu = CpuSampler()
        self.last_report = time.monotonic()

    def run(self) -> m.Summary:
        self.pipe.start()
        while True:
            self.pipe.crew.check()
            msg = self.ctl.poll(TICK)
            if isinstance(msg, m.Summary):
                if not self.done_sent:
                    raise RemoteProtocolError("the receiver sent its summary before the stream ended")
                if self.rescue is not None:
                    self.rescue.save(final=True)
                return msg
            if msg is not None:
                self._take(msg)
            if not self.done_sent and self.pipe.done_in(self.epoch):
                self._say_done()
            elif not self.done_sent:
                self._report()
            if self.rescue is not None:
                self.rescue.save()

    def _take(self, msg: m.Message) -> None:
        if isinstance(msg, m.Ack):
            self.durable = msg.bytes
            self.clone.link.peer_journal = msg.journal
            acked = self.pipe.acked(msg.seq)
            if self.rescue is not None:
                self.rescue.acked([(r.job.chunk, r.note) for r in acked if r.job.chunk is not None])
        elif isinstance(msg, m.Resend):
            self._resend(msg)
        elif isinstance(msg, m.Progress) and msg.phase == "verify":
            self.verify_rate.total = msg.total
            self.verify_rate.update(msg.done)
            self.sink(
                events.Progress(
                    phase=msg.phase,
                    done=msg.done,
                    total=msg.total,
                    rate=self.verify_rate.rate,
                    eta=self.verify_rate.eta(msg.done),
                )
            )
        elif isinstance(msg, m.Progress):
            self.remote = msg
        elif isinstance(msg, m.CheckSource):
            if self.source_checked:
                raise RemoteProtocolError("the receiver asked twice for the source's filesystem checks")
            self.source_checked = True
            opts = self.clone.opts
            checks = _check_source(self.clone.source_, self.clone.umap, self.rescue, opts, msg.checks, self.sink)
            self.ctl.send(m.SourceChecked(checks=tuple(checks)))

    def _resend(self, msg: m.Resend) -> None:
        if msg.repair:
            self._repair(msg)
            return
        self.resends[msg.seq] = self.resends.get(msg.seq, 0) + 1
        if self.resends[msg.seq] > RESENDS_PER_FRAME or sum(self.resends.values()) > RESENDS_PER_CLONE:
            raise RemoteProtocolError(
                f"the receiver asked for frame {msg.seq} again, beyond what a damaged link "
                f"explains ({RESENDS_PER_FRAME} per frame, {RESENDS_PER_CLONE} per clone)"
            )
        self.pipe.rewind(msg.seq, msg.epoch)
        self.epoch, self.done_sent = msg.epoch, False
        self.sink(events.Resent(seq=msg.seq, epoch=msg.epoch, reason=msg.reason))

    def _repair(self, msg: m.Resend) -> None:
        """Capability "delta-repair": chunks this side sent as SAME (the receiver offered their digests) whose
        bytes on the target differ, and (capability "delta-blocks") blocks of chunks it sent as BLOCKS that
        differ there: each is sent in full, in a round of repair at an END (at most one round per pass a
        clone may have)."""
        wanted = [(r.offset, r.length) for r in msg.repair]
        # Only in used mode does the receiver read SAME chunks back early (only there may it ask for them again);
        # in both, BLOCKS frames' blocks
        used = self.clone.the_plan.mode == "used"
        if (
            "delta-repair" not in self.ctl.state.shared_caps
            or self.pipe.offered is None
            or not (used or self.pipe.blocks)
        ):
            raise RemoteProtocolError("the receiver asked for a repair this clone does not allow")
        if self.repairs >= MAX_PASSES:
            raise RemoteProtocolError(f"the receiver asked for more than {MAX_PASSES} rounds of repair")
        if sum(n for _, n in wanted) > MAX_REPAIR_BYTES:
            raise RemoteProtocolError(f"the receiver asked for the repair of more than {MAX_REPAIR_BYTES} bytes")
        if any(b[0] < a[0] + a[1] for a, b in itertools.pairwise(wanted)):
            raise RemoteProtocolError("the receiver's repair ranges are not in order")
        self.repairs += 1
        again = self.pipe.repair(msg.seq, msg.epoch, wanted, same=used)
        self.epoch, self.done_sent = msg.epoch, False
        if again:
            self.sink(events.Resent(seq=msg.seq, epoch=msg.epoch, reason=msg.reason))

    def _say_done(self) -> None:
        pipe = self.pipe
        self.ctl.send(_done(pipe, self.epoch, self.rescue, self.clone))
        self.done_sent = True
        self.sink(self._progress(self.rate.average(pipe.done_bytes), 0.0))
        self.sink(events.Phase("verify", "waiting for the receiver to flush and read the target back"))

    def _progress(self, rate: float, eta: float | None, **shares: Any) -> events.Progress:
        pipe = self.pipe
        return events.Progress(
            phase="transfer",
            done=pipe.done_bytes,
            total=self.clone.chunks.bytes,
            rate=rate,
            eta=eta,
            wire=self.clone.wire,
            durable=self.durable,
            level=level_name(self.levels.level),
            **shares,
        )

    def stopped(self) -> None:
        """The clone failed: while it streamed, what the last ack said is on the target (the receiver says the
        same), as progress."""
        if not self.done_sent:
            self.sink(self._progress(self.rate.rate, None))

    def _report(self) -> None:
        """Twice a second: the level controller fed, the shares told to the receiver, progress here."""
        if time.monotonic() - self.last_report < REPORT_EVERY:
            return
        self.last_report = time.monotonic()
        pipe, remote, total = self.pipe, self.remote, self.clone.chunks.bytes
        shares = self.sampler.sample()
        read_cpu, waits = self.read_cpu.sample(), self.waits.sample()
        self.levels.update(
            Sample(
                link=shares["link"],
                starved=shares.pop("starved"),
                workers=shares["compress"],
                remote_link=remote.link_busy,
                remote_work=remote.work_busy,
                remote_write=remote.write_busy,
                cpu_idle=self.cpu.idle(),
            )
        )
        if "stages" in self.clone.caps:
            self.ctl.send(
                m.Progress(
                    phase="transfer",
                    done=pipe.done_bytes,
                    total=total,
                    read_busy=shares["read"],
                    work_busy=shares["compress"],
                    link_busy=shares["link"],
                    read_cpu=read_cpu,
                    cpu_wait=waits,
                )
            )
        shares.update(decompress=remote.work_busy, write=remote.write_busy)
        cpu = {"read": read_cpu, "write": remote.write_cpu, "sender": waits, "receiver": remote.cpu_wait}
        self.rate.update(pipe.done_bytes)
        rate, eta = self.rate.rate, self.rate.eta(pipe.done_bytes)
        self.sink(self._progress(rate, eta, stages=shares, bottleneck=limit(shares, cpu), cpu=cpu))


def _plain_reader(source: Source):  # type: ignore[no-untyped-def]
    def read(job: Job, view: memoryview) -> None:
        assert job.chunk is not None
        source.read_into(view, job.chunk.offset)

    return read


def _resume(
    link: PeerLink,
    offer: m.ResumeOffer,
    chunks: _ChunkList,
    source: Source,
    rescue: RescueJob | None,
    image: blake3.blake3 | None,
    sink: events.EventSink,
) -> agree.Agreed:
    """Agree with the receiver where to start, every chunk it holds checked against the source
    (``image``, exact mode, is fed the source's bytes of the chunks the stream does not send)."""

    def read(c: Chunk, view: memoryview) -> bool:
        if rescue is not None:
            if not rescue.confirm(c, view):
                return False  # readable before, not now: it cannot tell whether the source changed
        else:
            source.read_into(view, c.offset)
        c.zero_holes(view)
        return True

    link.peer_journal = offer.journal
    first_unknown = None
    if rescue is not None and offer.rescued:
        first_unknown = rescue.first_unknown(chunks, offer.seq)
    agreed = agree.sender_agree(
        link,
        offer,
        chunks,
        read,
        planned=chunks.count,
        planned_bytes=chunks.bytes,
        chunk_size=chunks.chunk_size,
        rescue=rescue is not None,
        sample=rescue is not None and offer.rescued,  # a failing source read again in full where it read well
        skip=rescue.damaged if rescue is not None else (lambda c: False),
        always=rescue.held_back if rescue is not None else (lambda c: False),
        first_unknown=first_unknown,
        image=image,
        sink=sink,
    )
    frames = agreed.frames
    if rescue is not None:
        rescue.resumed(chunks, len(frames), offer.rescued)
    sink(
        events.Resumed(
            role="sender",
            seq=len(frames),
            bytes=frames.covered,
            total=chunks.bytes,
            since=offer.since,
            replaced=len(agreed.replace),
        )
    )
    return agreed


def _check_source(
    source: Source,
    umap: usedmap.UsedMap,
    rescue: RescueJob | None,
    opts: SendOptions,
    failed: tuple[m.FsCheck, ...],
    sink: events.EventSink,
) -> list[m.FsCheck]:
    """The receiver's failed checkers, run on this source's partitions (never on a failing one, and not
    on one that may be mounted: a live filesystem fails its checker and would excuse a bad copy)."""
    if rescue is not None:
        return [dataclasses.replace(c, ok=None, message="not run: the source is failing") for c in failed]
    if isinstance(source, ImageSource):
        return [dataclasses.replace(c, ok=None, message="not compared: the source is an image") for c in failed]
    if opts.allow_mounted:
        return [dataclasses.replace(c, ok=None, message="not compared: the source may be mounted") for c in failed]
    sink(events.Phase("verify", "running on the source the filesystem checks that failed on the target"))
    return fscheck.check_source(source.path, umap.parts, failed)


def _done(pipe: SendPipeline, epoch: int, rescue: RescueJob | None, clone: _Sending) -> m.Done:
    """What the stream of ``epoch`` carried; a rescue's unreadable areas, and the files they hit (the receiver
    names them too)."""
    bad: list[tuple[int, int]] = []
    if rescue is not None:
        pending = [(r.job.chunk, r.note) for r in pipe.pending() if r.job.chunk is not None]
        bad = rescue.expected(clone.umap.extents, pending)
    return m.Done(
        frames=pipe.frames,
        bytes=pipe.done_bytes,
        list_digest=pipe.list_digest,
        source_digest=pipe.image_digest,
        epoch=epoch,
        unreadable=sum(n for _, n in bad),
        unreadable_ranges=tuple(m.Range(offset=o, length=n) for o, n in bad[:1024]),
        files_hit=fsnames.to_wire(clone.files_hit(bad)),
    )


def _encryption(link: PeerLink, opts: SendOptions) -> bool:
    """Seal the payloads? As the user said, else where this side or the peer wants it (each judges the link
    from its own end); refuse a peer that cannot open them."""
    if not (opts.encrypt if opts.encrypt is not None else link.seals_for_peer()):
        return False
    if "aes-gcm" not in link.ctl.state.shared_caps:
        raise RefusedError(
            f"{link.peer_name} cannot decrypt the data (it lists no aes-gcm)",
            hint="upgrade usb4-recovery there, or send with --no-encrypt",
        )
    return True
