"""The values messages carry that other packages describe too (pure): a machine, a disk, its partitions,
an identity that pins a disk, a map of what a clone copies, a filesystem check.

:mod:`recovery.disks` makes them from what it finds on this machine; the control channel's messages
(:mod:`recovery.protocol.messages`) carry them. Every field is checked on the way in
(:mod:`recovery.protocol.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from recovery.protocol.schema import bounded

HEX_DIGEST = 64  # BLAKE3 digests travel as 64 hex characters


@dataclass(frozen=True, slots=True)
class HostInfo:
    hostname: str = field(metadata=bounded(max_len=255))
    host_id: str = field(metadata=bounded(max_len=64))  # this boot of this machine (boot_id)
    software: str = field(metadata=bounded(max_len=64))  # "usb4-recovery 0.2.0"
    uuid: str | None = field(default=None, metadata=bounded(max_len=64))  # Thunderbolt host UUID
    machine_id: str | None = field(default=None, metadata=bounded(max_len=64))  # /etc/machine-id


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    number: int
    start: int
    size: int
    fstype: str | None = field(default=None, metadata=bounded(max_len=64))
    label: str | None = field(default=None, metadata=bounded(max_len=255))
    used: int | None = None  # bytes in use, when the filesystem says
    # Optional: the operating system it holds or boots, where cheap to tell ("Windows", an os-release name).
    os: str | None = field(default=None, metadata=bounded(max_len=80))


@dataclass(frozen=True, slots=True)
class Unfinished:
    """An interrupted clone onto this disk, which a clone of the same source resumes (its journal's word);
    as ``DiskInfo.copy``, the finished clone it holds (its record), which a delta clone updates."""

    source: str = field(metadata=bounded(max_len=32))  # names the source's hardware (journal.target_key)
    source_desc: str = field(metadata=bounded(max_len=255))  # for people
    done: int  # bytes durable on the disk
    total: int  # bytes the clone copies
    since: str = field(default="", metadata=bounded(max_len=64))
    complete: bool = False  # it finished, with areas the source could not read
    rescue: bool = False  # a rescue wrote some of it
    mode: Literal["used", "exact"] = "used"  # the clone's mode (a resume keeps it)
    # Optional (2.1): the source's machine, short name and model, so a wizard names the disk
    # "incomplete clone of office-pc's nvme0n1 (Samsung 980)"; empty for a journal that does not say.
    source_host: str = field(default="", metadata=bounded(max_len=255))
    source_name: str = field(default="", metadata=bounded(max_len=255))
    source_model: str = field(default="", metadata=bounded(max_len=255))


@dataclass(frozen=True, slots=True)
class DiskInfo:
    path: str
    size: int
    model: str | None = field(default=None, metadata=bounded(max_len=255))
    serial: str | None = field(default=None, metadata=bounded(max_len=255))
    wwn: str | None = field(default=None, metadata=bounded(max_len=255))
    transport: str | None = field(default=None, metadata=bounded(max_len=32))
    removable: bool = False
    ptable: str | None = field(default=None, metadata=bounded(max_len=16))
    partitions: tuple[PartitionInfo, ...] = field(default=(), metadata=bounded(max_len=256))
    mountpoints: tuple[str, ...] = field(default=(), metadata=bounded(max_len=256))
    system: bool = False  # holds the running system
    boot_medium: bool = False  # the stick this appliance booted from
    refusal: str | None = field(default=None, metadata=bounded(max_len=255))  # why it can't be a target
    # Optional, added for the wizard: what a controller puts in Plan.target
    # or Request.source_identity to pin this disk on its host. A peer that
    # omits it offers no disk a wizard can pin.
    identity: Identity | None = None
    # Optional: logical sector size; a target whose size differs from the
    # source's is refused (the partition tables count in sectors).
    sector_size: int | None = field(default=None, metadata=bounded(lo=512, hi=65536))
    # Optional: why the disk could not be opened or read ("Permission denied", "No medium found"):
    # listed so nobody wonders where it went, never usable.
    unreadable: str | None = field(default=None, metadata=bounded(max_len=255))
    # Optional, for a disk with neither a partition table nor a filesystem: True when every block
    # sampled reads as zeros (never used, or wiped), False when it holds data nothing here recognises.
    blank: bool | None = None
    # Optional: an interrupted clone onto this disk (a wizard offers to resume it).
    unfinished: Unfinished | None = None
    # Optional (2.1): the finished clone the disk holds, by its record (capability "delta": a clone of the
    # same source sends only what changed); ``done`` is what the record covers.
    copy: Unfinished | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """What pins a disk or image file, independent of its /dev name."""

    path: str
    size: int
    kind: Literal["disk", "partition", "file"]
    host_id: str = field(metadata=bounded(max_len=64))
    fingerprint: str = field(metadata=bounded(max_len=HEX_DIGEST))  # BLAKE3 of the partition-table areas
    wwn: str | None = field(default=None, metadata=bounded(max_len=255))
    serial: str | None = field(default=None, metadata=bounded(max_len=255))
    model: str | None = field(default=None, metadata=bounded(max_len=255))
    # Storage this lives on, as "blk:MAJ:MIN" and "file:DEV:INO" keys: two
    # identities on one host that share a key are the same storage.
    storage: tuple[str, ...] = field(default=(), metadata=bounded(max_len=64))
    # Optional: the logical sector size partition tables count in (BLKSSZGET
    # for devices; 4096 for an image whose GPT sits at 4096; None: unknown).
    sector_size: int | None = field(default=None, metadata=bounded(lo=512, hi=65536))


@dataclass(frozen=True, slots=True)
class MapPart:
    """How one partition is read: only its used blocks, or whole."""

    number: int
    start: int
    size: int
    fstype: str | None = field(default=None, metadata=bounded(max_len=64))
    method: Literal["used", "whole"] = "whole"
    bytes: int = 0  # bytes of this partition that will be sent
    # Optional: why the map is more than partclone's, or why it is whole.
    note: str | None = field(default=None, metadata=bounded(max_len=255))
    # Optional: what `blkid -p` sees on the source partition ("KEY=VALUE"),
    # which the target must show too after the copy.
    blkid: tuple[str, ...] = field(default=(), metadata=bounded(max_len=32))


@dataclass(frozen=True, slots=True)
class MapSummary:
    extents: int
    bytes: int  # bytes covered by frames (DATA and ZERO)
    digest: str = field(metadata=bounded(max_len=HEX_DIGEST))  # BLAKE3 of the packed extent list
    parts: tuple[MapPart, ...] = field(default=(), metadata=bounded(max_len=256))
    skipped: int = 0  # optional: bytes outside the partitions that used mode does not copy


@dataclass(frozen=True, slots=True)
class FsCheck:
    """One filesystem-level check of a target partition after the copy."""

    number: int  # partition number (0: the whole device)
    check: str = field(metadata=bounded(max_len=64))  # "e2fsck -fn", "blkid -p", ...
    ok: bool | None = None  # None: could not run (message says why)
    message: str = field(default="", metadata=bounded(max_len=1024))
    # Optional (2.1): it failed on the target, and the same checker fails on the source partition too
    # (capability "source-check"): the copy is as its source, and that does not fail the clone.
    source_fails: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    offset: int
    length: int


FILES_HIT_ENTRIES = 16  # entries (partitions, the area outside them) a done carries, at most
FILES_HIT_NAMES = 32  # files named per entry, at most; ``more`` counts the rest


@dataclass(frozen=True, slots=True)
class FilesHit:
    """Rescue: what the unreadable areas of one partition hit, as the sender's filesystem tools say."""

    partition: int  # 0: outside the partitions
    fstype: str | None = field(default=None, metadata=bounded(max_len=64))
    bytes: int = 0  # unreadable bytes in it
    files: tuple[str, ...] = field(default=(), metadata=bounded(max_len=FILES_HIT_NAMES))
    more: int = 0  # files the sender named there beyond ``files``
    note: str = field(default="", metadata=bounded(max_len=1024))
