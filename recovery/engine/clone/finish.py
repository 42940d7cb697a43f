"""The end of a clone, from the target itself: read it back, check its filesystems, and say the verdict.

The receiver reads the target back (:mod:`recovery.engine.clone.readback`) and, in used mode, runs each
filesystem's checker on it (:mod:`recovery.engine.clone.fscheck`), asking the sender to run a checker
that failed on its source too. Both sides turn what was found into the same verdict and the same
:class:`~recovery.errors.VerificationError` (:func:`failure`): the receiver from what it found, the sender
from the receiver's summary, checked against its own digests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from recovery import events
from recovery.engine.api import ReceiveOptions
from recovery.engine.clone import fscheck, gptend, imagetarget
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.imagetarget import ImageTarget
from recovery.engine.clone.progress import RateMeter
from recovery.engine.clone.readback import ReadbackResult, verify_image, verify_ranges
from recovery.engine.clone.target import Target
from recovery.engine.peer.session import PeerLink
from recovery.errors import RemoteProtocolError, VerificationError
from recovery.protocol import messages as m


@dataclass
class Verdict:
    """What the target itself said: the read-back, the filesystem checks, and whether that is verified."""

    result: ReadbackResult = field(default_factory=lambda: ReadbackResult([], None, 0.0))
    checks: list[m.FsCheck] = field(default_factory=list)
    verified: bool | None = None  # None: not read back (--no-verify)
    digest_differs: bool = False  # exact mode: the whole target does not hash to the source's BLAKE3


def verify(
    link: PeerLink,
    target: Target,
    plan: m.Plan,
    done: m.Done,
    frames: FrameList,
    opts: ReceiveOptions,
    sink: events.EventSink,
    checked: Mapping[int, tuple[int, int, bool]] | None = None,
    blocks: Sequence[tuple[int, int, bytes]] = (),
) -> Verdict:
    """The receiver's checks of the target once every frame is on it. ``checked``: frames read back
    during the stream already (a delta's unchanged chunks, and the unchanged blocks of its changed
    ones): not read again; ``blocks``: the blocks written into those (offset, length, digest), read."""
    if not opts.verify:
        sink(events.Warning("read-back verification was skipped (--no-verify)"))
        if not isinstance(target, ImageTarget):
            gptend.move_backup_to_end(target, plan.size, sink)
        return Verdict()
    result = read_back(link, target, plan, done, frames, opts, sink, checked or {}, blocks)
    differs = whole_digest_differs(plan.mode, result.image_digest, done.source_digest)
    verdict = Verdict(result, [], not result.mismatches and not differs, differs)
    if verdict.verified and not isinstance(target, ImageTarget):
        gptend.move_backup_to_end(target, plan.size, sink)  # before the checks: they see the final table
    if verdict.verified and plan.mode == "used":
        if isinstance(target, ImageTarget):
            sink(events.Warning("the filesystems inside an image are not checked yet: they are when it is restored"))
        elif opts.fs_check:
            _check_filesystems(link, target, plan, done, verdict, sink)
        else:
            sink(events.Warning("the filesystem checks were skipped (--no-fs-check)"))
    return verdict


def read_back(
    link: PeerLink,
    target: Target,
    plan: m.Plan,
    done: m.Done,
    frames: FrameList,
    opts: ReceiveOptions,
    sink: events.EventSink,
    checked: Mapping[int, tuple[int, int, bool]],
    blocks: Sequence[tuple[int, int, bytes]] = (),
) -> ReadbackResult:
    """Every frame read back past the cache (exact mode: the whole target, hashed), progress to both sides;
    used mode: but those ``checked`` during the stream, and ``blocks``."""
    sink(events.Phase("verify", f"reading {target.path} back to check it"))
    target.drop_cache()
    rate = RateMeter(plan.map.bytes if plan.mode == "used" else plan.size)

    def progress(done_bytes: int, total: int) -> None:
        rate.total = total
        rate.update(done_bytes)
        sink(events.Progress(phase="verify", done=done_bytes, total=total, rate=rate.rate, eta=rate.eta(done_bytes)))
        link.ctl.send(m.Progress(phase="verify", done=done_bytes, total=total))

    if isinstance(target, ImageTarget):
        return imagetarget.read_back(target, frames, plan.mode, progress, opts.cancel.is_set)
    if plan.mode == "exact":
        return verify_image(
            target.read_path,
            plan.size,
            done.source_digest,
            frames,
            on_progress=progress,
            should_stop=opts.cancel.is_set,
        )
    return verify_ranges(
        target.read_path, frames, on_progress=progress, should_stop=opts.cancel.is_set, checked=checked, extra=blocks
    )


def _check_filesystems(
    link: PeerLink, target: Target, plan: m.Plan, done: m.Done, verdict: Verdict, sink: events.EventSink
) -> None:
    """Used mode: each filesystem's checker on the target; one that failed is asked of the source too."""
    target.close()  # the checkers open the partitions themselves
    target.check_still_there()
    sink(events.Phase("verify", "checking each filesystem on the target (read-only)"))
    checks = fscheck.check_target(target.path, plan.map.parts)
    if fscheck.failures(checks) and "source-check" in link.ctl.state.shared_caps and not plan.rescue:
        checks = against_the_source(link, checks, plan.map.parts, sink)
    verdict.checks = checks
    if not done.unreadable:
        verdict.verified = not fscheck.failures(checks)
    else:
        for check in fscheck.failures(checks):
            sink(events.Warning(fscheck.damage_found(check, plan.map.parts)))


def against_the_source(
    link: PeerLink, checks: list[m.FsCheck], parts: Sequence[m.MapPart], sink: events.EventSink
) -> list[m.FsCheck]:
    """Checkers that failed on the target: ask the sender how they go on the source; one that fails
    there too does not fail the copy (it is as faithful as its source)."""
    failed = [c for c in fscheck.failures(checks) if c.check != "blkid -p"]
    if not failed:
        return checks
    sink(events.Phase("verify", "a filesystem check failed on the target: the sender runs it on the source"))
    link.ctl.send(m.CheckSource(checks=tuple(failed)))
    sizes = {p.number: p.size for p in parts}
    answer = _await_source_checks(link, 60.0 + sum(fscheck.time_limit(sizes.get(c.number, 0)) for c in failed))
    on_source = {(c.number, c.check): c for c in answer.checks}
    return [fscheck.explained(c, on_source.get((c.number, c.check))) if c in failed else c for c in checks]


def _await_source_checks(link: PeerLink, limit: float) -> m.SourceChecked:
    """The sender's answer, within the time its checkers may take (``limit``); none: the target's checks stand."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        msg = link.ctl.poll(1.0)
        if isinstance(msg, m.SourceChecked):
            return msg
        if msg is not None and not isinstance(msg, m.Progress):
            raise RemoteProtocolError(f"unexpected {msg.type!r} message while the sender checks its source")
    return m.SourceChecked(checks=())  # no answer in time: the target's checks stand


def whole_digest_differs(mode: str, target_digest: str | None, source_digest: str | None) -> bool:
    """Exact mode: the target read back whole does not hash to the source's BLAKE3."""
    return bool(mode == "exact" and target_digest and source_digest and target_digest != source_digest)


def failure(
    where: str,
    mismatches: Sequence[tuple[int, int]],
    checks: Sequence[m.FsCheck],
    digest_differs: bool,
    kept_as: str | None,
) -> VerificationError:
    """Why the target at ``where`` failed verification, in the same words on both sides."""
    if mismatches:
        error = VerificationError(
            f"reading {where} back found {len(mismatches)} range(s) that differ from the source's chunks",
            ranges=list(mismatches),
            hint="the target disk may be failing; run the clone again or use another disk",
        )
    elif digest_differs:
        error = VerificationError(
            f"{where} read back whole does not give the source's BLAKE3", hint="run the clone again"
        )
    else:
        error = fscheck.failure_error(checks, where)
    return error.kept(kept_as)
