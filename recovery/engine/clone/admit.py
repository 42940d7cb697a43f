"""The receiver's decision on a plan, before anything is written: does it fit the limits both sides
hold to, this side's encryption policy, and the target the user chose (and its room)?"""

from __future__ import annotations

from recovery.disks import identity, safety
from recovery.engine.api import ReceiveOptions
from recovery.engine.clone.imagetarget import ImageTarget
from recovery.engine.clone.target import Target
from recovery.engine.peer.session import PeerLink
from recovery.errors import RecoveryError, RefusedError
from recovery.protocol import messages as m
from recovery.protocol.frames import max_frames
from recovery.protocol.limits import CHUNK_ALIGN, MAX_CHUNK_SIZE, MAX_FRAMES, MAX_PARTS
from recovery.units import human_size


def admit(link: PeerLink, plan: m.Plan, opts: ReceiveOptions) -> tuple[Target, m.Identity]:
    """The opened target and its identity, pinned; :class:`RefusedError` when the plan may not write it."""
    check_sealing(link, plan)
    check_limits(plan)
    return open_target(plan, opts)


def measure(opts: ReceiveOptions) -> m.Measured:
    """The answer to a sender's ``measure`` (capability "fit"): the target as it is now, opened read-only
    (nothing is written before a plan is admitted), or why it cannot be the target."""
    if opts.image:
        return m.Measured(refused="this side saves an image file: it has no size to fit the source to")
    try:
        safety.check_target_path(opts.target, overwrite=opts.overwrite)
        found = identity.identify(opts.target)
    except RecoveryError as e:
        return m.Measured(refused=str(e)[:1024])
    except OSError as e:
        return m.Measured(refused=f"cannot inspect {opts.target}: {e.strerror}"[:1024])
    why = identity.mismatch(opts.expect, found) if opts.expect is not None else None
    if why:
        return m.Measured(refused=f"{opts.target} changed since it was chosen: {why}"[:1024])
    return m.Measured(target=found)


def check_sealing(link: PeerLink, plan: m.Plan) -> None:
    """This side's own policy, from its own end of the link: data that crosses a network comes sealed,
    whatever the sender sees (through a forwarder it may see loopback), unless this side's user said
    --no-encrypt."""
    if plan.encrypted or not link.encrypts:
        return
    why = (
        "this side was told to take sealed data only (--encrypt)"
        if link.encrypt
        else f"the link to it crosses a network as seen from here ({link.conn.kind} from {link.conn.peer})"
    )
    raise RefusedError(
        f"the sender would send the data unencrypted, and {why}",
        hint="send without --no-encrypt, or give --no-encrypt on this side too to accept it",
    )


def check_limits(plan: m.Plan) -> None:
    """What a plan may ask of this side at most (the schema already checked each field's type and range)."""
    if "zstd" not in plan.codecs and "raw" not in plan.codecs:
        raise RefusedError("the sender offers no codec this side knows")
    if plan.chunk_size > MAX_CHUNK_SIZE or plan.chunk_size % CHUNK_ALIGN:
        raise RefusedError(f"chunk size {plan.chunk_size} is not a multiple of 4 KiB up to {MAX_CHUNK_SIZE}")
    if plan.frames > MAX_FRAMES:
        raise RefusedError(
            f"the plan announces {plan.frames} frames, more than {MAX_FRAMES} this side keeps track of",
            hint="send with a larger --chunk-size",
        )
    if len(plan.map.parts) > MAX_PARTS:
        raise RefusedError(
            f"the plan names {len(plan.map.parts)} partitions, more than a partition table holds ({MAX_PARTS})"
        )
    end = 0
    for part in sorted(plan.map.parts, key=lambda p: p.start):
        if part.size <= 0 or part.start < end or part.start + part.size > plan.size:
            raise RefusedError(
                f"the plan's partition {part.number} ({part.start}+{part.size}) is not inside the "
                f"{plan.size} bytes of the disk, or overlaps another"
            )
        end = part.start + part.size
    if plan.frames > max_frames(plan.size, plan.chunk_size) or plan.map.bytes > plan.size:
        raise RefusedError(
            f"the plan announces {plan.frames} frames and {plan.map.bytes} bytes, more than {plan.size} bytes can need"
        )


def open_target(plan: m.Plan, opts: ReceiveOptions) -> tuple[Target, m.Identity]:
    """Open the target once and judge what was opened: still the one the user named, the one the
    sender chose, not the source, big enough (an image file: room enough on its filesystem)."""
    safety.check_target_path(opts.target, overwrite=opts.overwrite, image=opts.image)
    target = (
        ImageTarget(
            opts.target, plan.chunk_size, plan.source.sector_size or 512, opts.passphrase, no_links=opts.no_links
        )
        if opts.image
        else Target(opts.target)
    )
    try:
        pinned = target.identity()
        if opts.expect is not None:
            why = identity.mismatch(opts.expect, pinned)
            if why:
                raise RefusedError(
                    f"{target.path} changed since it was chosen: {why}",
                    hint="check the disk with `recovery disks` and start again",
                )
        if plan.target is not None:
            why = identity.mismatch(plan.target, pinned)
            if why:
                raise RefusedError(f"the target the sender chose is not {target.path}: {why}")
        safety.check_against_plan(pinned, plan.source, plan.size)
        if not target.is_block and not opts.image:
            check_room(target, plan)
    except (RecoveryError, OSError) as e:
        target.discard_created()
        target.unlock()
        if isinstance(e, OSError):
            raise RefusedError(f"cannot inspect {opts.target}: {e.strerror}") from None
        raise
    return target, pinned


def check_room(target: Target, plan: m.Plan) -> None:
    """An image file whose filesystem cannot take what the plan writes is refused before the first byte
    (what the plan leaves out stays a hole and costs nothing; all-zero chunks too, found only as they come)."""
    room, needed = target.room(), plan.map.bytes
    if room >= needed:
        return
    hint = "free space there, or write the image to a disk with more room"
    if plan.mode == "exact":
        hint += "; a clone in used mode stores only the blocks the filesystems use"
    raise RefusedError(
        f"{target.path} cannot hold the clone: its filesystem has {human_size(room)} free "
        f"({room} bytes), the clone writes up to {human_size(needed)} ({needed} bytes)",
        hint=hint,
    )
