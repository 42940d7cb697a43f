"""The receiving side of one clone: admit the plan, (resume), write, verify from the target, summarise."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from recovery import events
from recovery.disks import identity, signatures, usedmap
from recovery.engine.api import ReceiveOptions
from recovery.engine.clone import finish, increment
from recovery.engine.clone.admit import admit, measure
from recovery.engine.clone.earlycheck import EarlyCheck
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.health import watched_clone
from recovery.engine.clone.imagetarget import ImageTarget, image_manifest
from recovery.engine.clone.pipeline import TICK
from recovery.engine.clone.progress import REPORT_EVERY, CpuShare, ProcessorWait, RateMeter, StageSampler, limit
from recovery.engine.clone.recvpipe import ReceivePipeline
from recovery.engine.clone.target import Target
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.session import PeerLink, handshake
from recovery.engine.rescue import fsnames
from recovery.engine.rescue.passes import unreadable_error
from recovery.engine.resume import agree, journal
from recovery.engine.resume.keeper import Keeper
from recovery.errors import (
    RefusedError,
    RemoteProtocolError,
    UnreadableSourceError,
)
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.frames import ChunkHeader, FrameLimits

MEASURES = 4  # measure messages a sender may send before its plan


def receive_disk(
    conn: Connection, opts: ReceiveOptions, sink: events.EventSink = events.ignore, guard: CodeGuard | None = None
) -> events.Summary:
    """Pair on a fresh connection (serving ``guard``'s code, or ``opts.code``), then receive one disk."""
    guard = guard or CodeGuard(opts.code)
    link = handshake(
        conn, "receiver", guard=guard, timeout=opts.timeout, sink=sink, cancel=opts.cancel, encrypt=opts.encrypt
    )
    return receive_on(link, opts, sink)


def receive_on(link: PeerLink, opts: ReceiveOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """Wait for the paired sender's plan on ``link``, receive one disk, close the link."""
    try:
        try:
            plan = link.ctl.expect(m.Plan, m.Measure)
            for _ in range(MEASURES):  # a sender fitting its source first asks what the target is
                if not isinstance(plan, m.Measure):
                    break
                link.ctl.send(measure(opts))
                plan = link.ctl.expect(m.Plan, m.Measure)
            if not isinstance(plan, m.Plan):
                raise RemoteProtocolError(f"the sender asked what the target is more than {MEASURES} times")
        except BaseException as e:  # noqa: BLE001 - re-raised, or the peer's reason instead
            raise link.abandon(e) from None
        assert isinstance(plan, m.Plan)
        try:
            summary = run_receive(link, plan, opts, sink)
        except UnreadableSourceError:
            link.await_goodbye()
            raise
        # Close only once the sender said it has our summary: on a cable the last
        # bytes before a close can be dropped without an error.
        if not link.await_goodbye():
            sink(events.Warning("the sender did not confirm it got the summary; the target is as verified here"))
        return summary
    finally:
        link.close()


@watched_clone
def run_receive(
    link: PeerLink, plan: m.Plan, opts: ReceiveOptions, sink: events.EventSink = events.ignore
) -> events.Summary:
    """The steps of a clone on the receiving side: admit the plan and accept, begin (fresh or resumed),
    stream, verify from the target itself, conclude (both sides get the summary)."""
    clone = _Receiving(link, plan, opts, sink)
    try:
        clone.accept()
        clone.begin()
        done = clone.stream()
        frames = clone.pipe_.framelist
        verdict = finish.verify(link, clone.target_, plan, done, frames, opts, sink, clone.checked, clone.block_reads)
        return clone.conclude(done, verdict)
    except UnreadableSourceError:
        raise  # the clone ran to its end: the summary is out, the journal kept for a rescue run
    except BaseException as e:  # noqa: BLE001 - re-raised as the first error, told to the peer
        raise clone.failed(e) from None
    finally:
        clone.release()


class _Receiving:
    """One clone on the receiving side: the state its steps share, and its clean-up."""

    def __init__(self, link: PeerLink, plan: m.Plan, opts: ReceiveOptions, sink: events.EventSink) -> None:
        self.link, self.plan, self.opts, self.sink = link, plan, opts, sink
        self.caps = link.ctl.state.shared_caps
        self.source_desc = f"{link.peer_name}:{identity.describe(plan.source)}"
        self.target: Target | None = None
        self.pinned: m.Identity | None = None
        self.offer: agree.Offer | None = None
        self.delta: agree.Delta | None = None  # the target holds an earlier clone of this source
        self.offered: FrameList | None = None  # what of it was offered (SAME frames may name these)
        self.parent: str | None = None  # an increment's: the earlier image's file name
        self.keeper = Keeper(None, sink)
        self.frames = FrameList()  # what the target holds already (a resume), and its held edge frames
        self.held: list[tuple[ChunkHeader, bytes | None]] = []
        self.replace = 0  # of those, frames the sender sends again (they differ from the source)
        self.resumed = 0  # bytes the target held already
        self.pipe: ReceivePipeline | None = None
        self.early: EarlyCheck | None = None
        self.checked: dict[int, tuple[int, int, bool]] = {}  # frames read back during the stream (EarlyCheck)
        self.block_reads: list[tuple[int, int, bytes]] = []  # blocks written into changed chunks, to read back
        self.progress: _TransferProgress | None = None
        self.started = time.monotonic()
        self.succeeded = False
        self.wire_start = link.conn.data.bytes_in  # the session's earlier clones are not this one's

    @property
    def wire(self) -> int:
        """Bytes this clone took from the data channel."""
        return self.link.conn.data.bytes_in - self.wire_start

    @property
    def journals(self) -> bool:
        """A resume journal is kept (an image file records its chunks itself)."""
        return self.opts.journal and not self.opts.image

    @property
    def target_(self) -> Target:
        assert self.target is not None
        return self.target

    @property
    def pipe_(self) -> ReceivePipeline:
        assert self.pipe is not None
        return self.pipe

    def accept(self) -> None:
        """Admit the plan (or refuse it, telling the sender), look for a resume, and accept."""
        plan, opts = self.plan, self.opts
        try:
            self.target, self.pinned = admit(self.link, plan, opts)
            if isinstance(self.target, ImageTarget):
                self._image_offer(self.target)
            elif "resume" in self.caps and self.journals and not (opts.restart or plan.restart):
                found = journal.read(opts.log_dir, self.pinned)
                self.offer = agree.receiver_offer(plan, found, self.target.fd, self.target.size, self.sink)
                if self.offer is None and self._takes_delta():
                    blocks = self._takes_blocks()
                    target = self.target
                    rechecked = blocks and plan.mode == "used"  # every offered chunk read back during the stream
                    self.delta = agree.delta_offer(plan, found, target.fd, target.size, self.sink, rechecked=rechecked)
                    if self.delta is not None and blocks:
                        offer = dataclasses.replace(self.delta.offer, blocks=True)
                        self.delta = dataclasses.replace(self.delta, offer=offer)
        except RefusedError as e:
            self.link.ctl.send(m.Refuse(code=e.code, message=e.message[:1000], hint=e.hint[:1000] if e.hint else None))
            raise
        self.sink(
            events.PlanMade(
                role="receiver",
                source=self.source_desc,
                target=identity.describe(self.pinned),
                mode=plan.mode,
                size=plan.size,
                to_send=plan.map.bytes,
                chunk_size=plan.chunk_size,
                parts=usedmap.part_events(plan.map.parts),
                skipped=plan.map.skipped,
                encrypted=plan.encrypted,
                verify=opts.verify,
            )
        )
        self.link.ctl.send(
            m.Accept(
                target=self.pinned,
                resume=self.offer.offer if self.offer else None,
                delta=self.delta.offer if self.delta else None,
            )
        )

    def _takes_delta(self) -> bool:
        """May this clone be a delta? Both sides list "delta", neither user refused it, not a rescue; onto a
        disk, or into an unencrypted image (an increment of an earlier image in its folder)."""
        plan, target = self.plan, self.target_
        into = target.is_block or (isinstance(target, ImageTarget) and target.passphrase is None)
        return "delta" in self.caps and plan.delta and self.opts.delta and into and not plan.rescue

    def _takes_blocks(self) -> bool:
        """May a changed chunk of this delta come as BLOCKS frames? Where this side verifies the target and can
        read it back during the stream (it compares their blocks on the early check's thread, opened here),
        and both sides can repair."""
        if not ({"delta-blocks", "delta-repair", "resend"} <= set(self.caps) and self.opts.verify):
            return False
        try:
            self.early = EarlyCheck(self.target_.read_path, self.plan.chunk_size)
        except OSError:
            return False  # nothing read back during the stream: no blocks, and a record is sampled first
        return True

    def _image_offer(self, target: ImageTarget) -> None:
        """An image file records its own chunks: an interrupted save of this plan is resumed from them; one
        of another is replaced only when the user said so (--yes, --restart)."""
        plan, opts = self.plan, self.opts
        increment.refuse_replacing_a_parent(
            target.path, target.fd, "save under another name (the new image is then an increment of it)"
        )
        target.heading = journal.heading(plan, self.source_desc)
        scanned = target.unfinished(self.sink)
        found = journal.from_image(target.path, scanned) if scanned is not None else None
        restart = opts.restart or plan.restart
        if found is not None and "resume" in self.caps and not restart:
            self.offer = agree.receiver_offer(plan, found, -1, 0, self.sink)
        if self.offer is None and not (opts.overwrite or restart) and target.holds_unfinished():
            of = (
                found.head.get("source_desc", "another disk")
                if found is not None
                else "a disk (it cannot be read here)"
            )
            raise RefusedError(
                f"{target.path} holds an unfinished image of {of}, which this clone would replace",
                hint="give another file name, or --yes (or --restart) to replace it",
            )
        if self.offer is None and self._takes_delta():
            self._parent_offer(target)

    def _parent_offer(self, target: ImageTarget) -> None:
        """An earlier image of this source in the folder: the new image is an increment of it, only the
        chunks that differ from it are sent."""
        parent = increment.find_parent(target.path, target.fd, self.plan, self.sink)
        if parent is not None:
            target.parent = parent.named
            self.parent = parent.named.name
            self.delta = agree.Delta(None, parent.offer, parent.offered)

    def begin(self) -> None:
        """The last look before the first write (still the disk that was pinned?), then the target and the
        journal as the clone starts: prepared and new, or as the interrupted clone left them."""
        assert self.pinned is not None
        self.target_.recheck(self.pinned)
        if self.offer is not None:
            self._resume(self.offer)
            return
        target, plan = self.target_, self.plan
        target.prepare(plan.size)
        zeroed: list[tuple[int, int]] = []
        if plan.mode == "used" and target.is_block:
            # Only the map is written: old signatures elsewhere would survive.
            def zero(offset: int, length: int) -> None:
                zeroed.append((offset, length))
                target.zero(offset, length)

            erased = signatures.wipe_regions(target.path, [(p.start, p.size) for p in plan.map.parts], zero)
            if erased:
                self.sink(events.Phase("transfer", "erased old signatures: " + ", ".join(erased)))
        if self.delta is not None:
            self._offer_delta(self.delta, zeroed)
        if isinstance(target, ImageTarget):
            self.keeper = Keeper(None, self.sink, image=target.path)
        elif "resume" in self.caps and self.journals:
            self.keeper = Keeper.fresh(
                self.opts.log_dir, plan, target, self.source_desc, self.sink, self.link.peer_name
            )

    def _offer_delta(self, delta: agree.Delta, zeroed: list[tuple[int, int]]) -> None:
        """Send the digests of what the target holds of the earlier clone (but what was just wiped)."""
        target = self.target_
        offered = delta.offered
        if offered is None:
            offered = agree.delta_frames(delta, target.fd, target.size, zeroed, self.sink)
        self.offered = offered
        agree.send_offered(self.link, offered)
        self.sink(
            events.DeltaOffered(
                role="receiver",
                since=delta.offer.since,
                source=delta.offer.source_desc,
                trusted=delta.offer.trusted,
                bytes=offered.covered,
            )
        )

    def _resume(self, offer: agree.Offer) -> None:
        """Send the digests of what the target holds; the sender says where it starts and what it replaces."""
        found, plan = offer.found, self.plan
        agree.send_digests(self.link, found.frames)
        start = self.link.ctl.expect(m.Start)
        assert isinstance(start, m.Start)
        if (
            start.seq > len(found.frames)
            or start.replace > start.seq
            or (start.replace and (plan.rescue or "replace" not in self.caps))
        ):
            raise RemoteProtocolError(
                f"the sender starts at frame {start.seq}, replacing {start.replace} of them; "
                f"the target holds {len(found.frames)}, and a rescue replaces none this way"
            )
        if isinstance(self.target, ImageTarget):
            found.frames.truncate(start.seq)
            self.target.resume_at(start.seq)
            self.keeper = Keeper(None, self.sink, image=self.target.path)
            named = self.target.writer_.header.parent  # an unfinished increment stays one
            self.parent = named.name if named is not None else None
        else:
            self.keeper = Keeper.resumed(found, start.seq, plan.rescue, self.sink)
        self.frames, self.replace, self.resumed = found.frames, start.replace, found.frames.covered
        self.held = [(h, d) for h, d in found.held if h.seq < start.seq]
        self.sink(
            events.Resumed(
                role="receiver",
                seq=start.seq,
                bytes=found.frames.covered,
                total=plan.map.bytes,
                since=offer.offer.since,
                replaced=start.replace,
            )
        )

    def stream(self) -> m.Done:
        """Run the pipeline until its END is written and the sender's done of the same epoch is here; then
        the totals must be what was planned and said."""
        plan, caps, ctl = self.plan, self.caps, self.link.ctl
        self.sink(events.Phase("transfer", f"receiving into {self.target_.path}"))
        self.started = time.monotonic()
        keys = ctl.state.clone_keys(plan.session)
        early = self.early = self._early_check()
        planned = (plan.rescue and "rescue" in caps) or self.replace > 0  # passes the sender announced
        blocks = self.delta is not None and self.delta.offer.blocks
        repairs = (early is not None or blocks) and {"resend", "delta-repair"} <= caps
        limits = FrameLimits(
            plan.chunk_size,
            plan.size,
            header_key=keys.header,
            frames=plan.frames,
            bytes=plan.map.bytes,
            encrypted=plan.encrypted,
            rewinds="resend" in caps,
            passes=planned or repairs,
            offered=self.offered,
            blocks=blocks,
        )
        pipe = self.pipe = ReceivePipeline(
            self.link.conn.data,
            self.target_,
            limits=limits,
            keys=keys,
            on_durable=lambda point: self.keeper.durable(point, pipe.framelist, ctl.try_send),
            on_resend=self._ask_again if "resend" in caps else None,
            workers=self.opts.workers,
            frames=self.frames,
            held=self.held,
            max_replaced=self.replace or None,
            early=early,
            on_repair=self._ask_repair if repairs else None,
            passes_expected=planned,
            early_same=plan.mode == "used",
        )
        self.progress = _TransferProgress(self)
        if early is not None:
            early.start()
        done = _run(self.link, pipe, self.progress)
        if early is not None:
            self.checked = early.finish()
        if self.delta is not None and self.delta.offer.blocks:
            checked, self.block_reads = pipe.block_reads()
            self.checked = {**self.checked, **checked}
        self.keeper.drain()  # the last ack goes out before the summary
        _check_totals(plan, done, pipe)
        if isinstance(self.target, ImageTarget):
            self.sink(events.Phase("transfer", f"writing the index of {self.target.path}"))
            self.target.seal(image_manifest(plan, done, self.link.peer_name, self.opts.passphrase))
        return done

    def _early_check(self) -> EarlyCheck | None:
        """A used-mode delta onto a disk or file: its unchanged chunks read back during the stream (exact
        mode hashes the whole target in order at the end, so it reads them then), and in both modes the
        chunks of BLOCKS frames, compared block by block."""
        blocks = self.delta is not None and self.delta.offer.blocks
        opened, self.early = self.early, None
        if self.offered is None or not (self.plan.mode == "used" or blocks) or not self.opts.verify:
            if opened is not None:
                opened.close()
            return None
        if opened is not None:
            return opened
        if isinstance(self.target, ImageTarget):
            return None
        try:
            return EarlyCheck(self.target_.read_path, self.plan.chunk_size)
        except OSError:
            return None  # the target cannot be opened again for reading: the end's read-back reads it all

    def _ask_repair(self, seq: int, epoch: int, ranges: list[tuple[int, int]], changed: list[tuple[int, int]]) -> None:
        """A round of repair: the blocks of changed chunks that differ on the target, and the chunks the target
        held by its record but that differ from the source (said on both sides)."""
        reason = f"{len(ranges) - len(changed)} block(s) of changed chunks differ on the target: they are sent"
        if changed:
            reason = (
                f"{len(changed)} chunk(s) the target held by its record differ from the source (the first at byte "
                f"{changed[0][0]}): the target changed since that clone; they are sent again"
            )
            self.sink(events.Warning(reason))
        repair = tuple(m.Range(offset=o, length=n) for o, n in ranges)
        self.link.ctl.send(m.Resend(seq=seq, epoch=epoch, reason=reason, repair=repair))

    def _ask_again(self, seq: int, epoch: int, reason: str) -> None:
        self.link.ctl.send(m.Resend(seq=seq, epoch=epoch, reason=reason[:500]))
        self.sink(events.Resent(seq=seq, epoch=epoch, reason=reason))

    def conclude(self, done: m.Done, verdict: finish.Verdict) -> events.Summary:
        """The journal's end, the partition table re-read (a verified disk only), the summary to both sides,
        and the verdict as an exit: a failed verification, or unreadable areas."""
        target, pipe, result = self.target_, self.pipe_, verdict.result
        self.keeper.end(target, verdict.verified, done.unreadable, record="delta" in self.caps)
        if verdict.verified:
            target.finish()  # the kernel reads the new partition table only of a copy that verified
        kept_as = target.set_aside(".unverified") if verdict.verified is False else None
        self.link.ctl.send(
            m.Summary(
                frames=pipe.frames,
                bytes_written=target.bytes_written,
                list_digest=pipe.list_digest,
                target_digest=result.image_digest,
                verified=verdict.verified,
                mismatches=tuple(m.Range(offset=o, length=n) for o, n in result.mismatches[:1024]),
                seconds=round(time.monotonic() - self.started, 3),
                checks=tuple(verdict.checks),
                resends=pipe.resends,
                kept_as=kept_as,
                zero_bytes=pipe.zero_bytes,
            )
        )
        summary = self._summary(done, verdict)
        self.sink(summary)
        if verdict.verified is False:
            raise finish.failure(target.path, result.mismatches, verdict.checks, verdict.digest_differs, kept_as)
        self.succeeded = True
        if done.unreadable:
            raise unreadable_error(done.unreadable, [(r.offset, r.length) for r in done.unreadable_ranges])
        return summary

    def _summary(self, done: m.Done, verdict: finish.Verdict) -> events.Summary:
        assert self.pinned is not None
        target, pipe, plan, result = self.target_, self.pipe_, self.plan, verdict.result
        return events.Summary(
            role="receiver",
            mode=plan.mode,
            source=self.source_desc,
            target=identity.describe(self.pinned),
            size=plan.size,
            bytes_read=0,
            bytes_sent=self.wire,
            bytes_written=target.bytes_written,
            zero_bytes=pipe.zero_bytes,
            unchanged=pipe.same_bytes,
            parent=self.parent,
            seconds=round(time.monotonic() - self.started, 3),
            list_digest=pipe.list_digest,
            image_digest=result.image_digest,
            verified=verdict.verified,
            mismatches=[[o, n] for o, n in result.mismatches],
            checks=[dataclasses.asdict(c) for c in verdict.checks],
            resends=pipe.resends,
            resumed=self.resumed,
            unreadable=done.unreadable,
            unreadable_ranges=[[r.offset, r.length] for r in done.unreadable_ranges],
            files_hit=fsnames.from_wire(done.files_hit),
            source_digest=done.source_digest is not None and result.image_digest == done.source_digest,
            rescue=plan.rescue,
            planned=plan.map.bytes,
        )

    def failed(self, error: BaseException) -> BaseException:
        """The error to raise: the first one (the pipeline's own before the lost link it caused), told to
        the peer; what was written since the last ack journaled; how to go on, if the journal holds it."""
        if self.progress is not None and self.pipe is not None and not self.pipe.finished.is_set():
            self.progress.stopped()
        error = self.link.abandon(error, self.pipe.crew if self.pipe else None)
        if self.pipe is not None:
            self.keeper.settle(self.pipe)
        return agree.resume_hint(error, self.keeper.holding, "this machine")

    def release(self) -> None:
        """Whatever happened: the threads stopped, the journal kept or removed, the target closed (an image
        file this run made is removed unless the clone succeeded or its journal keeps it for a resume)."""
        if self.pipe is not None:
            self.pipe.crew.shutdown()
        if self.early is not None:
            self.early.close()
        kept = self.keeper.release()
        if self.target is not None:
            if self.succeeded or kept:
                self.target.close()
            else:
                self.target.discard_created()
            self.target.unlock()


def _run(link: PeerLink, pipe: ReceivePipeline, progress: _TransferProgress) -> m.Done:
    """The pipeline's threads until its END is written and the sender's done of the same epoch came,
    with progress both ways."""
    ctl = link.ctl
    pipe.start()
    done: m.Done | None = None
    while not (pipe.finished.is_set() and done is not None and done.epoch == ctl.state.epoch):
        pipe.crew.check()
        msg = ctl.poll(TICK)
        if isinstance(msg, m.Done) and msg.epoch == ctl.state.epoch:
            done = msg
        elif isinstance(msg, m.Progress) and msg.phase == "transfer":
            progress.sender = msg
        progress.report()
    pipe.crew.check()
    pipe.crew.join()
    return done


class _TransferProgress:
    """The receiver's progress while it streams: its shares to the sender, the limit of both to its user."""

    def __init__(self, clone: _Receiving) -> None:
        self.clone, self.link, self.plan, self.sink = clone, clone.link, clone.plan, clone.sink
        self.pipe = pipe = clone.pipe_
        self.write_cpu, self.waits = CpuShare(pipe.write_meter), ProcessorWait()
        self.sampler = StageSampler(
            {
                "link": lambda: pipe.net_meter.busy,
                "decompress": lambda: pipe.work_meter.busy,
                "write": lambda: pipe.write_meter.busy,
            },
            {"decompress": pipe.workers},
        )
        self.rate = RateMeter(self.plan.map.bytes, done=pipe.done_bytes)  # a resume's part was not sent now
        self.sender: m.Progress | None = None  # the sender's shares, when it says them
        self.told_stages = "stages" in self.link.ctl.state.shared_caps
        self.last = time.monotonic()

    def report(self) -> None:
        if time.monotonic() - self.last < REPORT_EVERY:
            return
        self.last = time.monotonic()
        pipe, plan, sender = self.pipe, self.plan, self.sender
        shares = self.sampler.sample()
        write_cpu, waits = self.write_cpu.sample(), self.waits.sample()
        self.link.ctl.send(
            m.Progress(
                phase="transfer",
                done=pipe.done_bytes,
                total=plan.map.bytes,
                link_busy=shares["link"],
                work_busy=shares["decompress"],
                write_busy=shares["write"],
                write_cpu=write_cpu,
                cpu_wait=waits,
            )
        )
        cpu = {"write": write_cpu, "receiver": waits}
        if sender is not None:
            shares.update(read=sender.read_busy, compress=sender.work_busy, link=sender.link_busy)
            cpu.update(read=sender.read_cpu, sender=sender.cpu_wait)
        # A sender that lists "stages" says its shares soon: until then, name nothing.
        named = limit(shares, cpu, link_known=sender is not None) if sender or not self.told_stages else ""
        self.rate.update(pipe.done_bytes)
        rate, eta = self.rate.rate, self.rate.eta(pipe.done_bytes)
        self.sink(self._progress(rate, eta, stages=shares, bottleneck=named, cpu=cpu))

    def _progress(self, rate: float, eta: float | None, **shares: Any) -> events.Progress:
        return events.Progress(
            phase="transfer",
            done=self.pipe.done_bytes,
            total=self.plan.map.bytes,
            rate=rate,
            eta=eta,
            wire=self.clone.wire,
            durable=self.clone.keeper.acked,
            **shares,
        )

    def stopped(self) -> None:
        """The clone failed while it streamed: what the last ack told the sender is on the target (the sender
        says the same), as progress."""
        self.sink(self._progress(self.rate.rate, None))


def _check_totals(plan: m.Plan, done: m.Done, pipe: ReceivePipeline) -> None:
    if done.frames != pipe.frames or done.bytes != pipe.done_bytes or done.list_digest != pipe.list_digest:
        raise RemoteProtocolError(
            f"the sender says it sent {done.frames} frames ({done.bytes} bytes), "
            f"{pipe.frames} frames ({pipe.done_bytes} bytes) arrived"
        )
    if pipe.done_bytes != plan.map.bytes:
        raise RemoteProtocolError(f"the plan announced {plan.map.bytes} bytes, the stream carried {pipe.done_bytes}")
    if (done.unreadable or done.unreadable_ranges or done.files_hit) and not plan.rescue:
        raise RemoteProtocolError("the sender reports unreadable areas, but its plan was not a rescue")
    if done.unreadable > plan.map.bytes or sum(r.length for r in done.unreadable_ranges) > done.unreadable:
        raise RemoteProtocolError(
            f"the sender reports {done.unreadable} unreadable bytes, which its ranges or its plan cannot hold"
        )
