"""What a wizard session offers and announces: the disks with their identities, the user's
choice of a clone, and the events of each clone (who does what to which disk, how it ended)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from recovery import events
from recovery.disks import identity, inventory
from recovery.engine.resume import journal
from recovery.protocol import messages as m
from recovery.units import human_size


@dataclass(frozen=True)
class JobStarted(events.Event):
    """A clone begins on this side, driven from here or from the peer."""

    kind: ClassVar[str] = "job"
    role: str  # what this side does: "sender" or "receiver"
    driver: str  # "here" or "peer"
    peer: str  # the peer's host name
    source: str
    target: str
    log: str | None = None  # this clone's log file
    action: str = ""  # in plain words: "office-pc is READING disk nvme0n1 (...)"
    rescue: bool = False  # the clone runs in rescue mode (a failing source: what can be read is copied)


@dataclass(frozen=True)
class PeerDisks(events.Event):
    """The serving peer sent its disks again (after a clone): the driver's lists are stale."""

    kind: ClassVar[str] = "peer_disks"
    count: int


@dataclass(frozen=True)
class PeerActivity(events.Event):
    """The driving peer says what its user is doing between clones (and the review it confirms)."""

    kind: ClassVar[str] = "peer_activity"
    what: str
    step: int = 0
    steps: int = 0
    review: tuple[tuple[str, str], ...] = ()  # (label, text): what the peer's user is asked to confirm


@dataclass(frozen=True)
class ImagesFound(events.Event):
    """What a folder holds (:meth:`~recovery.engine.peer.clones.CloneSession.find_images`), of this
    machine (``here``) or of the peer, as the machine that holds it checked it."""

    kind: ClassVar[str] = "images_found"
    here: bool
    found: m.Images


@dataclass(frozen=True)
class JobEnded(events.Event):
    kind: ClassVar[str] = "job_end"
    ok: bool
    code: str = ""  # the error's code (recovery.errors) when not ok
    message: str = ""
    hint: str | None = None
    log: str | None = None
    peer: str | None = None  # the other machine, when the error happened there
    pairing_kept: bool = False  # failed, but the pairing stays (at once, or the two pair again by its secret)
    peer_left: bool = False  # failed because the other machine left the pairing (its user quit or ended it)


@dataclass(frozen=True)
class CloneChoice:
    """What the controlling user picked in the wizard."""

    send: bool  # True: this machine sends its disk; False: it receives the peer's
    source: m.DiskInfo  # a disk of the sending machine
    target: m.DiskInfo  # a disk of the receiving machine
    mode: str = "used"
    level: int | None = None  # None: auto
    verify: bool = True
    rescue: bool = False  # a failing source: copy what can be read (recovery.engine.rescue.passes)
    restart: bool = False  # start over even if the target holds an interrupted clone of the source
    # An image file instead of a disk (capability "images"), its path on the machine that holds it: a new
    # image the clone is saved into (``target`` then only describes it), or one it restores (``source``).
    image_target: str | None = None
    image_source: str | None = None
    fit: str = "keep"  # "shrink" onto a smaller target, "grow" onto a larger one (capability "fit")
    sizes: dict[int, int] = field(default_factory=dict)  # fit: partitions the user sized (capability "fit-sizes")
    # An image saved: encrypt it under this passphrase; an image restored: its passphrase (never shown,
    # logged or kept; to the peer only sealed, capability "image-passphrase": see .imagepass).
    passphrase: str | None = field(default=None, repr=False)


def describe_info(disk: m.DiskInfo) -> str:
    """One line a user recognises, from a hello's disk entry."""
    bits = [disk.path]
    hw = " ".join(x for x in (disk.model, disk.serial) if x and x != "image file")
    if hw:
        bits.append(hw)
    bits.append(human_size(disk.size))
    return ", ".join(bits)


def with_identities(disks: Iterable[m.DiskInfo], log_dir: Path | None = None) -> tuple[m.DiskInfo, ...]:
    """The disks as a peer's wizard needs them: each with the identity that pins it, and the
    interrupted clone onto it that its resume journal describes, or the finished one its record does."""
    out = []
    for d in disks:
        try:
            ident: m.Identity | None = identity.identify(d.path)
        except OSError:
            ident = None  # unreadable now: shown, but cannot be pinned
        unfinished = journal.peek(log_dir, ident) if ident is not None else None
        copy = journal.peek(log_dir, ident, kept=True) if ident is not None else None
        out.append(dataclasses.replace(d, identity=ident, unfinished=unfinished, copy=copy))
    return tuple(out)


def offered_disks(paths: Sequence[str] = (), log_dir: Path | None = None) -> tuple[m.DiskInfo, ...]:
    """This machine's disks (or only ``paths``, e.g. the demo's images), with identities."""
    infos = [inventory.describe_disk(p) for p in paths] if paths else inventory.list_disks()
    return with_identities(infos, log_dir)


def unfinished(source: m.DiskInfo, target: m.DiskInfo) -> m.Unfinished | None:
    """The interrupted clone of ``source`` onto ``target`` that a clone of them would resume, if any."""
    return _of(source, target.unfinished)


def earlier_copy(source: m.DiskInfo, target: m.DiskInfo) -> m.Unfinished | None:
    """The finished clone of ``source`` that ``target`` holds (its record), which a delta clone updates."""
    return _of(source, target.copy)


def _of(source: m.DiskInfo, found: m.Unfinished | None) -> m.Unfinished | None:
    """``found`` if it is a clone of ``source``'s hardware."""
    if found is None or source.identity is None or found.source != journal.target_key(source.identity):
        return None
    return found


def disk_paths(paths: Sequence[str] = ()) -> list[str]:
    """Where to look for a pinned disk now: ``paths``, or every disk of this machine."""
    return list(paths) if paths else [d.path for d in inventory.list_disks()]
