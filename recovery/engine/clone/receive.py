"""The receiving side of one clone: check the plan, (resume), write, read back, summarise."""

from __future__ import annotations

import dataclasses
import time

from recovery import events
from recovery.disks import identity, safety, signatures, usedmap
from recovery.engine.api import ReceiveOptions
from recovery.engine.clone import fscheck
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.health import watched_clone
from recovery.engine.clone.progress import RateMeter, StageSampler, limit
from recovery.engine.clone.readback import ReadbackResult, verify_image, verify_ranges
from recovery.engine.clone.recvpipe import DurablePoint, ReceivePipeline
from recovery.engine.clone.target import Target
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.session import PeerLink, handshake
from recovery.engine.rescue.passes import unreadable_error
from recovery.engine.resume import agree, journal
from recovery.errors import (
    RecoveryError,
    RefusedError,
    RemoteProtocolError,
    UnreadableSourceError,
    VerificationError,
)
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.frames import MAX_CHUNK_SIZE, MAX_FRAMES, ChunkHeader, FrameLimits, max_frames
from recovery.units import human_size

TICK = 0.25
REPORT_EVERY = 0.5


def receive_disk(conn: Connection, opts: ReceiveOptions, sink: events.EventSink = events.ignore,
                 guard: CodeGuard | None = None) -> events.Summary:
    """Pair on a fresh connection (serving ``guard``'s code, or ``opts.code``), then receive one disk."""
    guard = guard or CodeGuard(opts.code)
    link = handshake(conn, "receiver", guard=guard, timeout=opts.timeout, sink=sink, cancel=opts.cancel,
                     encrypt=opts.encrypt)
    return receive_on(link, opts, sink)


def receive_on(link: PeerLink, opts: ReceiveOptions, sink: events.EventSink = events.ignore) -> events.Summary:
    """Wait for the paired sender's plan on ``link``, receive one disk, close the link."""
    try:
        try:
            plan = link.ctl.expect(m.Plan)
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


@dataclasses.dataclass
class _Start:
    """Where this run starts: the frames the target holds, the journal being written."""

    frames: FrameList
    held: list[tuple[ChunkHeader, bytes | None]]
    journal: journal.Journal | None
    replace: int = 0  # frames of those the sender sends again after the first pass (they differ from the source)


@watched_clone
def run_receive(
    link: PeerLink, plan: m.Plan, opts: ReceiveOptions, sink: events.EventSink = events.ignore
) -> events.Summary:
    """Check ``plan`` against the target, then write, read back and summarise."""
    conn, ctl, theirs = link.conn, link.ctl, link.theirs
    target: Target | None = None
    pipe: ReceivePipeline | None = None
    begun: _Start | None = None
    succeeded = False
    caps = ctl.state.shared_caps
    try:
        try:
            _check_sealing(link, plan)
            target, pinned = _check_plan(plan, opts)
            offer = None
            if "resume" in caps and opts.journal and not (opts.restart or plan.restart):
                found = journal.read(opts.log_dir, pinned)
                offer = agree.receiver_offer(plan, found, target.fd, target.size, sink)
        except RefusedError as e:
            ctl.send(m.Refuse(code=e.code, message=e.message[:1000], hint=e.hint[:1000] if e.hint else None))
            raise
        src_desc = f"{theirs.host.hostname}:{identity.describe(plan.source)}"
        sink(events.PlanMade(
            role="receiver", source=src_desc, target=identity.describe(pinned), mode=plan.mode,
            size=plan.size, to_send=plan.map.bytes, chunk_size=plan.chunk_size,
            parts=usedmap.part_events(plan.map.parts), skipped=plan.map.skipped, encrypted=plan.encrypted,
            verify=opts.verify,
        ))
        ctl.send(m.Accept(target=pinned, resume=offer.offer if offer else None))
        # The last look before the first write: still the disk that was pinned?
        target.recheck(pinned)
        if offer is not None:
            begun = _resumed(link, plan, offer, sink)
        else:
            begun = _fresh(plan, target, opts, src_desc, "resume" in caps, sink)
        resumed_bytes = begun.frames.covered

        sink(events.Phase("transfer", f"receiving into {target.path}"))
        started = time.monotonic()
        keys = ctl.state.clone_keys(plan.session)
        limits = FrameLimits(plan.chunk_size, plan.size, header_key=keys.header, frames=plan.frames,
                             bytes=plan.map.bytes, encrypted=plan.encrypted, rewinds="resend" in caps,
                             passes=(plan.rescue and "rescue" in caps) or begun.replace > 0)
        pipe = _pipeline(link, target, limits, keys, begun, opts, "resend" in caps, sink)
        done_msg = _stream(link, pipe, plan, sink)
        if begun.journal is not None:
            begun.journal.drain()  # the last ack goes out before the summary
        _check_totals(plan, done_msg, pipe)
        transfer_seconds = time.monotonic() - started

        result = ReadbackResult([], None, 0.0)
        verified: bool | None = None
        if opts.verify:
            result = _read_back(link, target, plan, done_msg, pipe, opts, sink)
            verified = not result.mismatches and not _whole_digest_differs(plan, result, done_msg)
        else:
            sink(events.Warning("read-back verification was skipped (--no-verify)"))
        checks: list[m.FsCheck] = []
        if verified and plan.mode == "used" and opts.fs_check:
            target.close()  # the checkers open the partitions themselves
            target.check_still_there()
            sink(events.Phase("verify", "checking each filesystem on the target (read-only)"))
            checks = fscheck.check_target(target.path, plan.map.parts)
            if fscheck.failures(checks) and "source-check" in caps and not plan.rescue:
                checks = _against_the_source(link, checks, sink)
            if not done_msg.unreadable:
                verified = not fscheck.failures(checks)
            elif fscheck.failures(checks):
                sink(events.Warning("a filesystem check of the target failed: the source could not be read "
                                    "everywhere, and the filesystem misses what was there"))
        elif verified and plan.mode == "used":
            sink(events.Warning("the filesystem checks were skipped (--no-fs-check)"))
        _end_journal(begun, target, verified, done_msg.unreadable, sink)
        if verified:
            target.finish()  # the kernel reads the new partition table only of a copy that verified
        kept_as = target.set_aside(".unverified") if verified is False else None
        mismatches = tuple(m.Range(offset=o, length=n) for o, n in result.mismatches[:1024])
        ctl.send(m.Summary(
            frames=pipe.frames, bytes_written=target.bytes_written, list_digest=pipe.list_digest,
            target_digest=result.image_digest, verified=verified, mismatches=mismatches,
            seconds=round(transfer_seconds + result.seconds, 3), checks=tuple(checks), resends=pipe.resends,
            kept_as=kept_as,
        ))
        bad = [(r.offset, r.length) for r in done_msg.unreadable_ranges]
        summary = events.Summary(
            role="receiver", mode=plan.mode, source=src_desc, target=identity.describe(pinned),
            size=plan.size, bytes_read=0, bytes_sent=conn.data.bytes_in,
            bytes_written=target.bytes_written, zero_bytes=pipe.zero_bytes,
            seconds=round(time.monotonic() - started, 3), list_digest=pipe.list_digest,
            image_digest=result.image_digest, verified=verified,
            mismatches=[[o, n] for o, n in result.mismatches],
            checks=[dataclasses.asdict(c) for c in checks], resends=pipe.resends, resumed=resumed_bytes,
            unreadable=done_msg.unreadable, unreadable_ranges=[[o, n] for o, n in bad],
            source_digest=done_msg.source_digest is not None and result.image_digest == done_msg.source_digest,
            rescue=plan.rescue,
        )
        sink(summary)
        if verified is False:
            raise _failed(target.path, result, checks, _whole_digest_differs(plan, result, done_msg)).kept(kept_as)
        succeeded = True
        if done_msg.unreadable:
            raise unreadable_error(done_msg.unreadable, bad)
        return summary
    except BaseException as e:
        if isinstance(e, UnreadableSourceError):
            raise
        error = link.abandon(e, pipe.crew if pipe else None)
        jrnl = begun.journal if begun is not None else None
        if pipe is not None and begun is not None and jrnl is not None:
            _settle(pipe, begun, sink)
        holding = str(jrnl.path) if jrnl is not None and jrnl.error is None and jrnl.done > 0 else None
        raise agree.resume_hint(error, holding, "this machine") from None
    finally:
        if pipe is not None:
            pipe.crew.shutdown()
        kept = begun is not None and begun.journal is not None and begun.journal.done > 0
        if begun is not None and begun.journal is not None:
            if kept:
                begun.journal.close()
            else:
                begun.journal.remove()  # nothing became durable: nothing to resume
        if target is not None:
            if succeeded or kept:
                target.close()  # an unfinished image file stays for the resume its journal allows
            else:
                target.discard_created()


def _against_the_source(link: PeerLink, checks: list[m.FsCheck], sink: events.EventSink) -> list[m.FsCheck]:
    """Checkers that failed on the target: ask the sender how they go on the source; one that fails
    there too does not fail the copy (it is as faithful as its source)."""
    failed = [c for c in fscheck.failures(checks) if c.check != "blkid -p"]
    if not failed:
        return checks
    sink(events.Phase("verify", "a filesystem check failed on the target: the sender runs it on the source"))
    link.ctl.send(m.CheckSource(checks=tuple(failed)))
    answer = link.ctl.expect(m.SourceChecked)
    assert isinstance(answer, m.SourceChecked)
    on_source = {(c.number, c.check): c for c in answer.checks}
    return [fscheck.explained(c, on_source.get((c.number, c.check))) if c in failed else c for c in checks]


def _whole_digest_differs(plan: m.Plan, result: ReadbackResult, done: m.Done) -> bool:
    """Exact mode: the target read back whole does not hash to the source's BLAKE3."""
    return bool(plan.mode == "exact" and result.image_digest and done.source_digest
                and result.image_digest != done.source_digest)


def _failed(path: str, result: ReadbackResult, checks: list[m.FsCheck], digest_differs: bool) -> VerificationError:
    """Why the target failed verification, in words."""
    if result.mismatches:
        return VerificationError(f"reading {path} back found {len(result.mismatches)} range(s) that differ from "
                                 "what was received", ranges=result.mismatches,
                                 hint="the target disk may be failing; try another disk")
    if digest_differs:
        return VerificationError(f"{path} read back whole does not give the source's BLAKE3")
    return fscheck.failure_error(checks, path)


def _fresh(plan: m.Plan, target: Target, opts: ReceiveOptions, src_desc: str, journaled: bool,
           sink: events.EventSink) -> _Start:
    """A clone from the beginning: prepare the target, start a journal."""
    target.prepare(plan.size)
    if plan.mode == "used" and target.is_block:
        # Only the map is written: old signatures elsewhere would survive.
        erased = signatures.wipe_regions(target.path, [(p.start, p.size) for p in plan.map.parts], target.zero)
        if erased:
            sink(events.Phase("transfer", "erased old signatures: " + ", ".join(erased)))
    jrnl = None
    if journaled and opts.journal:
        try:
            prepared = target.identity()
            jrnl = journal.Journal.create(opts.log_dir, plan, prepared, identity.fingerprint(target.fd, target.size),
                                          src_desc, identity.describe(prepared))
        except OSError as e:
            sink(events.Warning(f"no resume journal is kept ({e.strerror}): an interrupted clone starts over"))
    return _Start(FrameList(), [], jrnl)


def _resumed(link: PeerLink, plan: m.Plan, offer: agree.Offer, sink: events.EventSink) -> _Start:
    """Send the digests of what the target holds; the sender says where it starts."""
    found = offer.found
    agree.send_digests(link, found.frames)
    start = link.ctl.expect(m.Start)
    assert isinstance(start, m.Start)
    if start.seq > len(found.frames) or start.replace > start.seq or (start.replace and (
            plan.rescue or "replace" not in link.ctl.state.shared_caps)):
        raise RemoteProtocolError(f"the sender starts at frame {start.seq}, replacing {start.replace} of them; "
                                  f"the target holds {len(found.frames)}, and a rescue replaces none this way")
    jrnl = journal.Journal(found.path, found.key, append_at=found.good_size)
    jrnl.done = len(found.frames)
    if start.seq < len(found.frames):
        found.frames.truncate(start.seq)
        jrnl.truncate(start.seq)
    if plan.rescue and not found.head.get("rescue"):
        jrnl.mark_rescue()
    held = [(h, d) for h, d in found.held if h.seq < start.seq]
    sink(events.Resumed(role="receiver", seq=start.seq, bytes=found.frames.covered, total=plan.map.bytes,
                        since=offer.offer.since, replaced=start.replace))
    return _Start(found.frames, held, jrnl, start.replace)


def _pipeline(link: PeerLink, target: Target, limits: FrameLimits, keys: object, begun: _Start,
              opts: ReceiveOptions, resend: bool, sink: events.EventSink) -> ReceivePipeline:
    ctl = link.ctl
    state: dict[str, ReceivePipeline] = {}

    jrnl = begun.journal

    def durable(point: DurablePoint) -> None:
        ack = m.Ack(seq=point.seq, bytes=point.covered)
        if jrnl is None:
            ctl.send(ack)
        else:  # the ack goes out once the journal has it on the disk, and says so if it does
            jrnl.durable(point, state["pipe"].framelist, then=lambda: ctl.try_send(
                dataclasses.replace(ack, journal=str(jrnl.path) if jrnl.error is None else None)))

    def again(seq: int, epoch: int, reason: str) -> None:
        ctl.send(m.Resend(seq=seq, epoch=epoch, reason=reason[:500]))
        sink(events.Resent(seq=seq, epoch=epoch, reason=reason))

    pipe = ReceivePipeline(link.conn.data, target, limits=limits, keys=keys,  # type: ignore[arg-type]
                           on_durable=durable, on_resend=again if resend else None, workers=opts.workers,
                           frames=begun.frames, held=begun.held, max_replaced=begun.replace or None)
    state["pipe"] = pipe
    return pipe


def _stream(link: PeerLink, pipe: ReceivePipeline, plan: m.Plan, sink: events.EventSink) -> m.Done:
    """Run the pipeline until its END is written and the sender's done of the same epoch is here."""
    conn, ctl = link.conn, link.ctl
    p = pipe
    sampler = StageSampler({"link": lambda: p.net_meter.busy, "decompress": lambda: p.work_meter.busy,
                            "write": lambda: p.write_meter.busy}, {"decompress": pipe.workers})
    rate = RateMeter(plan.map.bytes)
    pipe.start()
    done_msg: m.Done | None = None
    sender: m.Progress | None = None  # the sender's shares, when it says them
    told_stages = "stages" in ctl.state.shared_caps
    last_report = time.monotonic()
    while not (pipe.finished.is_set() and done_msg is not None and done_msg.epoch == ctl.state.epoch):
        pipe.crew.check()
        msg = ctl.poll(TICK)
        if isinstance(msg, m.Done) and msg.epoch == ctl.state.epoch:
            done_msg = msg
        elif isinstance(msg, m.Progress) and msg.phase == "transfer":
            sender = msg
        if time.monotonic() - last_report >= REPORT_EVERY:
            last_report = time.monotonic()
            shares = sampler.sample()
            ctl.send(m.Progress(phase="transfer", done=pipe.done_bytes, total=plan.map.bytes,
                                link_busy=shares["link"], work_busy=shares["decompress"],
                                write_busy=shares["write"]))
            if sender is not None:
                shares.update(read=sender.read_busy, compress=sender.work_busy, link=sender.link_busy)
            # A sender that lists "stages" says its shares soon: until then, name nothing.
            named = limit(shares, link_known=sender is not None) if sender or not told_stages else ""
            rate.update(pipe.done_bytes)
            sink(events.Progress(
                phase="transfer", done=pipe.done_bytes, total=plan.map.bytes, rate=rate.rate,
                eta=rate.eta(pipe.done_bytes), wire=conn.data.bytes_in, durable=pipe.done_bytes,
                stages=shares, bottleneck=named,
            ))
    pipe.crew.check()
    pipe.crew.join()
    return done_msg


def _read_back(link: PeerLink, target: Target, plan: m.Plan, done: m.Done, pipe: ReceivePipeline,
               opts: ReceiveOptions, sink: events.EventSink) -> ReadbackResult:
    sink(events.Phase("verify", f"reading {target.path} back to check it"))
    target.drop_cache()
    vrate = RateMeter(plan.map.bytes if plan.mode == "used" else plan.size)

    def progress(done_bytes: int, total: int) -> None:
        vrate.total = total
        vrate.update(done_bytes)
        sink(events.Progress(phase="verify", done=done_bytes, total=total, rate=vrate.rate,
                             eta=vrate.eta(done_bytes)))
        link.ctl.send(m.Progress(phase="verify", done=done_bytes, total=total))

    if plan.mode == "exact":
        return verify_image(target.read_path, plan.size, done.source_digest, pipe.framelist,
                            on_progress=progress, should_stop=opts.cancel.is_set)
    return verify_ranges(target.read_path, pipe.framelist, on_progress=progress, should_stop=opts.cancel.is_set)


def _settle(pipe: ReceivePipeline, begun: _Start, sink: events.EventSink) -> None:
    """The clone failed: make what was written since the last ack durable and journal it, if the target lets us."""
    jrnl = begun.journal
    assert jrnl is not None
    try:
        pipe.settle(lambda point: jrnl.durable(point, pipe.framelist))
        jrnl.drain()
    except (RecoveryError, OSError) as e:
        sink(events.Warning(f"what was written since the last flush is not in the journal: {e}"))
    if jrnl.error is not None:
        sink(events.Warning(f"the resume journal could not be written ({jrnl.error.strerror}): "
                            "the clone cannot resume, it starts over"))


def _end_journal(begun: _Start, target: Target, verified: bool | None, unreadable: int,
                 sink: events.EventSink) -> None:
    """A clean clone needs no journal; one with unreadable areas keeps it for a rescue run."""
    jrnl = begun.journal
    if jrnl is None:
        return
    begun.journal = None
    jrnl.drain()
    if jrnl.error is not None:
        sink(events.Warning(f"the resume journal could not be written ({jrnl.error.strerror}); it was given up"))
    try:
        if unreadable and verified is not False:
            fd = target.fd if target.fd >= 0 else None
            fp = identity.fingerprint(fd, target.size) if fd is not None else identity.identify(target.path).fingerprint
            jrnl.finish(fp, unreadable)
            jrnl.close()
        else:
            jrnl.remove()
    except OSError as e:
        sink(events.Warning(f"the resume journal {jrnl.path} could not be closed: {e.strerror}"))


def _check_sealing(link: PeerLink, plan: m.Plan) -> None:
    """This side's own policy, from its own end of the link: data that crosses a network comes sealed,
    whatever the sender sees (through a forwarder it may see loopback), unless this side's user said
    --no-encrypt."""
    if plan.encrypted or not link.encrypts:
        return
    why = ("this side was told to take sealed data only (--encrypt)" if link.encrypt else
           f"the link to it crosses a network as seen from here ({link.conn.kind} from {link.conn.peer})")
    raise RefusedError(f"the sender would send the data unencrypted, and {why}",
                       hint="send without --no-encrypt, or give --no-encrypt on this side too to accept it")


def _check_plan(plan: m.Plan, opts: ReceiveOptions) -> tuple[Target, m.Identity]:
    """Open the target and decide whether this plan may write it."""
    if plan.mode not in ("used", "exact"):
        raise RefusedError(f"unknown clone mode {plan.mode!r}")
    if "zstd" not in plan.codecs and "raw" not in plan.codecs:
        raise RefusedError("the sender offers no codec this side knows")
    if plan.chunk_size > MAX_CHUNK_SIZE or plan.chunk_size % 4096:
        raise RefusedError(f"chunk size {plan.chunk_size} is not a multiple of 4 KiB up to {MAX_CHUNK_SIZE}")
    if plan.frames > MAX_FRAMES:
        raise RefusedError(f"the plan announces {plan.frames} frames, more than {MAX_FRAMES} this side keeps "
                           "track of", hint="send with a larger --chunk-size")
    if len(plan.map.parts) > fscheck.MAX_PARTS:
        raise RefusedError(f"the plan names {len(plan.map.parts)} partitions, more than a partition table holds "
                           f"({fscheck.MAX_PARTS})")
    if plan.frames > max_frames(plan.size, plan.chunk_size) or plan.map.bytes > plan.size:
        raise RefusedError(f"the plan announces {plan.frames} frames and {plan.map.bytes} bytes, "
                           f"more than {plan.size} bytes can need")
    safety.check_target_path(opts.target, overwrite=opts.overwrite)
    target = Target(opts.target)
    try:
        pinned = target.identity()
        if opts.expect is not None:
            why = identity.mismatch(opts.expect, pinned)
            if why:
                raise RefusedError(f"{target.path} changed since it was chosen: {why}",
                                   hint="check the disk with `recovery disks` and start again")
        if plan.target is not None:
            why = identity.mismatch(plan.target, pinned)
            if why:
                raise RefusedError(f"the target the sender chose is not {target.path}: {why}")
        safety.check_against_plan(pinned, plan.source, plan.size)
        if not target.is_block:
            _check_room(target, plan)
    except (RecoveryError, OSError) as e:
        target.discard_created()
        if isinstance(e, OSError):
            raise RefusedError(f"cannot inspect {opts.target}: {e.strerror}") from None
        raise
    return target, pinned


def _check_room(target: Target, plan: m.Plan) -> None:
    """An image file whose filesystem cannot take what the plan writes is refused before the first byte
    (what the plan leaves out stays a hole and costs nothing; all-zero chunks too, found only as they come)."""
    room, needed = target.room(), plan.map.bytes
    if room >= needed:
        return
    hint = "free space there, or write the image to a disk with more room"
    if plan.mode == "exact":
        hint += "; a clone in used mode stores only the blocks the filesystems use"
    raise RefusedError(f"{target.path} cannot hold the clone: its filesystem has {human_size(room)} free "
                       f"({room} bytes), the clone writes up to {human_size(needed)} ({needed} bytes)", hint=hint)


def _check_totals(plan: m.Plan, done: m.Done, pipe: ReceivePipeline) -> None:
    if done.frames != pipe.frames or done.bytes != pipe.done_bytes or done.list_digest != pipe.list_digest:
        raise RemoteProtocolError(
            f"the sender says it sent {done.frames} frames ({done.bytes} bytes), "
            f"{pipe.frames} frames ({pipe.done_bytes} bytes) arrived"
        )
    if pipe.done_bytes != plan.map.bytes:
        raise RemoteProtocolError(
            f"the plan announced {plan.map.bytes} bytes, the stream carried {pipe.done_bytes}"
        )
    if (done.unreadable or done.unreadable_ranges) and not plan.rescue:
        raise RemoteProtocolError("the sender reports unreadable areas, but its plan was not a rescue")
    if done.unreadable > plan.map.bytes or sum(r.length for r in done.unreadable_ranges) > done.unreadable:
        raise RemoteProtocolError(f"the sender reports {done.unreadable} unreadable bytes, which its ranges "
                                  "or its plan cannot hold")
