"""What the wizard shows about disks, computed from plain data (no Textual, no I/O).

Disk rows and their refusals, and the choice the user is building. Screens
only render these; tests check them directly.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from recovery.diskimage.seal import new_passphrase_problem
from recovery.disks import fitplan, identity, safety
from recovery.engine.fit import fat, filecopy, resize
from recovery.engine.peer.jobs import CloneChoice
from recovery.protocol.messages import DiskInfo, Identity, ImageEntry, PartitionInfo, Unfinished
from recovery.units import human_size

FS_NAMES = {
    "crypto_LUKS": "LUKS (encrypted)",
    "LVM2_member": "LVM volume",
    "linux_raid_member": "RAID member",
    "swap": "swap",
}


def short_name(disk: DiskInfo) -> str:
    """What the user types to confirm: ``sdb``, ``nvme0n1``, ``target.img``."""
    return os.path.basename(disk.path.rstrip("/")) or disk.path


def _partition(p: PartitionInfo) -> str:
    bits = [FS_NAMES.get(p.fstype or "", p.fstype or "unknown")]
    if p.number == 0:
        bits.append("on the whole disk")
    if p.label:
        bits.append(f'"{p.label}"')
    bits.append(human_size(p.size))
    if p.used is not None:
        bits.append(f"({human_size(p.used)} used)")
    if p.os:
        bits.append(f"[{p.os}]")
    return " ".join(bits)


def clone_text(job: Unfinished) -> str:
    """A disk the wizard wrote, by its journal: ``incomplete clone of office-pc's nvme0n1 (Samsung 980),
    256.0 MiB written, 2026-12-06 14:02``."""
    of, when = copied_from(job), f", {job.since[:16]}" if job.since else ""
    if job.complete:
        return f"clone of {of}, finished but for areas the source could not read{when}"
    return f"incomplete clone of {of}, {human_size(job.done)} written{when}"


def copied_from(job: Unfinished) -> str:
    """The source a journal or record names: ``office-pc's nvme0n1 (Samsung 980)``."""
    if job.source_host and job.source_name:
        return f"{job.source_host}'s {job.source_name}" + (f" ({job.source_model})" if job.source_model else "")
    return job.source_desc or "another disk"  # a journal that does not name it


def copy_text(record: Unfinished) -> str:
    """A disk that holds a finished clone, by its record: ``copy of office-pc's nvme0n1 (Samsung 980) from
    2026-12-01 10:02``."""
    return f"copy of {copied_from(record)}" + (f" from {record.since[:16]}" if record.since else "")


def contents(disk: DiskInfo) -> str:
    """What is on a disk, in one line: the clone the wizard wrote there (by its journal), partitions,
    filesystems, used space, the system on it."""
    if disk.unreadable:
        return disk.unreadable
    if disk.unfinished is not None or disk.copy is not None:
        clone = clone_text(disk.unfinished) if disk.unfinished is not None else copy_text(disk.copy)  # type: ignore[arg-type]
        return f"{clone}: {_found(disk)}" if disk.partitions else clone
    return _found(disk)


def _found(disk: DiskInfo) -> str:
    """What reading the disk found on it."""
    if not disk.partitions:
        if disk.ptable:
            return f"{disk.ptable}, no partitions"
        if disk.blank:
            return "no partition table, no filesystem: all zeros where sampled (never used, or wiped)"
        if disk.blank is False:
            return "no partition table, no filesystem: data nothing here recognises (encrypted? foreign?)"
        return "no partition table, no filesystem found"
    head = f"{disk.ptable}: " if disk.ptable else ""
    return head + " · ".join(_partition(p) for p in disk.partitions)


def systems(disk: DiskInfo) -> list[str]:
    """The operating systems found on a disk, each once."""
    return list(dict.fromkeys(p.os for p in disk.partitions if p.os))


def used_bytes(disk: DiskInfo) -> int | None:
    """Bytes in use on the disk's filesystems that say (None: none says)."""
    known = [p.used for p in disk.partitions if p.used is not None]
    return sum(known) if known else None


def source_refusal(disk: DiskInfo) -> str | None:
    """Why a disk cannot be the source (None: it can)."""
    if disk.unreadable:
        return disk.unreadable
    if disk.size <= 0:
        return "it is empty"
    if disk.mountpoints:
        return f"mounted at {', '.join(disk.mountpoints)}: unmount it first"
    return None


MIB = 1 << 20
BTRFS_ROOM = 256 * MIB  # over a Btrfs's used bytes and a fifth: its smallest device holds whole chunks
SHRINK_ROOM = 0.1  # room over a filesystem's used bytes it keeps when shrunk, at the least (an estimate)
GPT_TAIL = 33 * 512  # the GPT's backup at a disk's end: 128 entries of 128 bytes, and its header


def shrunk_size(disk: DiskInfo) -> int | None:
    """About how small ``disk`` can be fitted (``--fit shrink``): the smallest disk the sender's planner lays
    its partitions out on, each filesystem that can shrink at its estimated smallest (:func:`partition_facts`);
    None when it has no partition table to fit. The sender measures each one exactly before anything is
    written, and refuses with the numbers when it was wrong."""
    if disk.ptable not in ("gpt", "dos") or not disk.partitions or (disk.sector_size or 512) not in (512, 4096):
        return None
    logical = sorted((p for p in disk.partitions if p.number > 4 and disk.ptable == "dos"), key=lambda p: p.number)
    if [p.start for p in logical] != sorted(p.start for p in logical):
        return None  # numbered out of their order on the disk: the sender refuses to fit them
    tail = GPT_TAIL if disk.ptable == "gpt" else 0
    return fitplan.smallest_target([partition_facts(p) for p in disk.partitions], disk.size, tail)


def smallest_size(p: PartitionInfo) -> int | None:
    """About how small a partition's filesystem can be shrunk, from what the disk list says of it: a swap
    area to its smallest, one copied file by file (XFS, exFAT) to the new filesystem the copy makes, a FAT to the
    clusters its type needs, an ext or NTFS filesystem to its used bytes and some room; None when it cannot
    shrink or its used bytes are not known. An estimate: the sender measures each one exactly."""
    if p.fstype == "swap":
        return min(p.size, resize.SWAP_SMALLEST)
    if p.fstype in filecopy.COPIED and p.used is not None:
        return min(p.size, filecopy.smallest(p.used, p.fstype))
    if p.fstype == "vfat" and p.used is not None:  # it keeps its FAT type: so many clusters at least
        return min(p.size, fat.estimate(p.size, p.used))
    if p.fstype == "btrfs" and p.used is not None:  # its chunks, and metadata kept twice, need more room
        return min(p.size, p.used + p.used // 5 + BTRFS_ROOM)
    if p.fstype in resize.SHRINKS and p.used is not None:
        return min(p.size, int(p.used * (1 + SHRINK_ROOM)) + 4 * MIB)
    return None


def partition_facts(p: PartitionInfo) -> fitplan.Facts:
    """A partition as the planner takes it, estimated from what the disk list says (no type: the wizard is
    not told it, and the planner keeps small partitions, an ESP's among them, at their size)."""
    low = smallest_size(p)
    why = resize.why_kept(p.fstype) or ("" if low is not None else "its used space is not known here")
    grows, copies, regrows = p.fstype in resize.GROWS, p.fstype in filecopy.COPIED, p.fstype in filecopy.GROWN
    return fitplan.Facts(p.number, p.start, p.size, "", p.fstype, p.used, low, grows, copies, regrows, why)


def fit_for(source: DiskInfo, target: DiskInfo, *, grow: bool = False) -> fitplan.Fit:
    """The fit a clone of ``source`` onto ``target`` needs: "shrink" onto a smaller disk; onto a larger one
    "grow" when the user asked for it (:func:`can_grow`), else "keep"."""
    if target.size < source.size:
        return "shrink"
    return "grow" if grow and can_grow(source, target) else "keep"


def can_grow(source: DiskInfo, target: DiskInfo) -> bool:
    """``target`` is larger than ``source``, whose table can be fitted and holds a filesystem that grows."""
    return (
        target.size > source.size
        and source.ptable in ("gpt", "dos")
        and (source.sector_size or 512) in (512, 4096)
        and any(p.fstype in resize.GROWS for p in source.partitions)
    )


def target_note(source: DiskInfo, target: DiskInfo) -> str:
    """What the list says of a usable target that is smaller than the source ("" for the others)."""
    if fit_for(source, target) != "shrink" or target_refusal(source, target):
        return ""
    return "smaller than the source: its filesystems are shrunk to fit (the source is not written)"


def target_refusal(source: DiskInfo, target: DiskInfo) -> str | None:
    """Why ``target`` cannot receive ``source`` (None: it can)."""
    if source.identity and target.identity and identity.same_storage(source.identity, target.identity):
        return "it is the source disk, or the source lives on it"
    if target.refusal:
        return target.refusal
    if target.size < source.size:
        shrunk = shrunk_size(source)
        if shrunk is None or target.size < shrunk:
            needs = f"{human_size(shrunk)} even shrunk" if shrunk else human_size(source.size)
            return f"too small: {human_size(target.size)}, the source needs {needs}"
    if target.identity is None:
        return "the other machine did not identify it (update usb4-recovery there)"
    if source.identity:
        mismatch = safety.sector_mismatch(source.identity, target.identity)
        if mismatch:
            return mismatch
    return None


# --- image files -------------------------------------------------------------


def image_name(source: DiskInfo, day: datetime.date) -> str:
    """The name proposed for an image of ``source``: its model (else its name) and the day, ``.img``."""
    named = source.model if source.model and source.model != "image file" else posixpath.splitext(short_name(source))[0]
    words = re.sub(r"[^A-Za-z0-9_-]+", "-", named).strip("-") or "disk"
    return f"{words[:80]}-{day.isoformat()}.img"


def image_text(entry: ImageEntry) -> str:
    """What an image file holds, in one line: ``disk of office-pc: /dev/sda, Samsung 980, 16.0 GiB ·
    used · 2026-12-06 · 1.2 GiB file``."""
    if entry.problem:
        return f"cannot be restored: {entry.problem}"
    if entry.encrypted:
        return f"encrypted image of a {human_size(entry.size)} disk · {human_size(entry.file_bytes)} file"
    of = f"disk of {entry.source_host}: " if entry.source_host else ""
    bits = [of + (entry.source or human_size(entry.size)), entry.mode, entry.created[:10], human_size(entry.file_bytes)]
    return " · ".join(b for b in bits if b) + " file"


def image_refusal(entry: ImageEntry, peer: str = "") -> str | None:
    """Why the wizard cannot restore this image (None: it can); ``peer``: the image is on that machine,
    whose usb4-recovery cannot take an image's passphrase."""
    if entry.problem:
        return entry.problem
    if entry.encrypted and peer:
        return f"encrypted, and {peer} cannot take its passphrase: upgrade usb4-recovery there"
    if entry.size <= 0:
        return "it does not say how large its disk is"
    return None


def restore_refusal(entry: ImageEntry | None, target: DiskInfo) -> str | None:
    """Why ``target`` cannot take the disk the image ``entry`` holds, beyond its size (None: it can)."""
    if entry is None or target.identity is None or not entry.sector_size:
        return None
    saved = Identity(path=entry.name, size=entry.size, kind="disk", host_id="", fingerprint="")
    return safety.sector_mismatch(dataclasses.replace(saved, sector_size=entry.sector_size), target.identity)


def image_disk(path: str, size: int, held: str = "image file") -> DiskInfo:
    """An image file where the wizard shows a disk: the target a save makes, or the source a restore reads."""
    return DiskInfo(path=path, size=size, model=held)


def restored_disk(folder: str, entry: ImageEntry) -> DiskInfo:
    """The image ``entry`` of ``folder`` as the source of a restore."""
    return image_disk(posixpath.join(folder, entry.name), entry.size, f"image of {entry.source or 'a disk'}")


# --- the choice being built ------------------------------------------------


@dataclass
class Choice:
    """The wizard's answers so far."""

    send: bool | None = None  # True: this machine's disk goes to the peer
    source: DiskInfo | None = None
    target: DiskInfo | None = None
    mode: str = "used"
    level: int | None = None  # None: auto, 0: off
    verify: bool = True
    rescue: bool = False  # the source has unreadable areas: rescue mode
    restart: bool = False  # the target holds an interrupted clone or a copy of the source: start over instead
    image_target: str | None = None  # a save: the new image file (``target`` describes it)
    image_source: ImageEntry | None = None  # a restore: the image (``source`` describes it, by its path)
    grow: bool = False  # a larger target: grow the source's filesystems to fill it (else the space stays free)
    sizes: dict[int, int] = field(default_factory=dict)  # a fitted clone: partitions sized on the layout step
    # A save: encrypt the image under it; a restore of an encrypted image: its passphrase. Never shown.
    passphrase: str | None = field(default=None, repr=False)

    def complete(self) -> CloneChoice:
        assert self.send is not None and self.source is not None and self.target is not None
        return CloneChoice(
            send=self.send,
            source=self.source,
            target=self.target,
            mode=self.mode,
            level=self.level,
            verify=self.verify,
            rescue=self.rescue,
            restart=self.restart,
            image_target=self.image_target,
            image_source=self.source.path if self.image_source else None,
            fit=self.fit,
            sizes=dict(self.sizes) if self.fit != "keep" else {},
            passphrase=self.passphrase if passphrase_asked(self) else None,
        )

    @property
    def fit(self) -> fitplan.Fit:
        """How the clone fits the target: "shrink", "grow", or "keep" (an image saved, or not chosen yet)."""
        if self.source is None or self.target is None or self.image_target is not None:
            return "keep"
        return fit_for(self.source, self.target, grow=self.grow)

    @property
    def ready(self) -> bool:
        return self.send is not None and self.source is not None and self.target is not None


# --- an image's passphrase ---------------------------------------------------

Asked = Literal["new", "image", ""]


def passphrase_asked(choice: Choice) -> Asked:
    """What the options step asks of a passphrase: "new" (a save, which may encrypt its image), "image"
    (the image restored is encrypted), or "" (nothing)."""
    if choice.image_target is not None:
        return "new"
    if choice.image_source is not None and choice.image_source.encrypted:
        return "image"
    return ""


def typed_passphrase(asked: Asked, encrypt: bool, first: str, again: str) -> tuple[str | None, str | None]:
    """The options step's passphrase from what was typed, or why it is not taken: ``(passphrase, None)``
    or ``(None, problem)``; ``(None, None)`` when none is asked (or a save is not encrypted)."""
    if asked == "image":
        return (first, None) if first else (None, "type the image's passphrase")
    if asked != "new" or not encrypt:
        return None, None
    problem = new_passphrase_problem(first, again)
    return (None, problem) if problem else (first, None)
