"""How a disk is in use right now: mounts, swap, holders, and whether it is the boot stick.

One place for these rules, so the receiver's refusals, the source check,
the wizard's disk lists and the appliance's first screen agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recovery.disks import blockdev, partitions

SYSTEM_MOUNTS = {"/", "/boot", "/boot/efi", "/efi", "/usr", "/var", "/home"}
BOOT_PART_NAME = "USB4-RECOVERY"  # GPT partition name of the appliance's ESP
BOOT_FS_LABEL = "U4RECOVERY"  # its filesystem label
ESP_TYPES = {"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"}
LOADER_PARTUUID = Path("/sys/firmware/efi/efivars/LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    devnum: str  # "MAJ:MIN"
    source: str
    mountpoint: str
    fstype: str


def mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    out: list[Mount] = []
    try:
        text = mountinfo.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        if len(f) < 5 or len(r) < 2:
            continue
        mountpoint = f[4].replace("\\040", " ")
        devnum = f[2]
        source = r[1]
        if source.startswith("/dev/"):
            try:
                rdev = os.stat(source).st_rdev
                devnum = f"{os.major(rdev)}:{os.minor(rdev)}" if rdev else devnum
            except OSError:
                pass
        out.append(Mount(devnum, source, mountpoint, r[0]))
    return out


def swaps() -> set[str]:
    """Device numbers of active swap devices."""
    out: set[str] = set()
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        path = line.split()[0] if line.split() else ""
        try:
            rdev = os.stat(path).st_rdev
        except OSError:
            continue
        if rdev:
            out.add(f"{os.major(rdev)}:{os.minor(rdev)}")
    return out


def loader_partuuid() -> str | None:
    """The PARTUUID the firmware loaded us from (set by systemd-boot/stub)."""
    try:
        raw = LOADER_PARTUUID.read_bytes()[4:]
    except OSError:
        return None
    return raw.decode("utf-16-le", errors="ignore").strip("\0").strip().lower() or None


def is_boot_stick(path: str, table: partitions.Table | None) -> bool:
    """The appliance's own stick: its ESP is named USB4-RECOVERY, or is the partition the
    firmware loaded us from, or is an ESP whose FAT is labelled U4RECOVERY."""
    if table is None:
        return False
    loader = loader_partuuid()
    for p in table.partitions:
        if (p.name or "") == BOOT_PART_NAME or (loader and (p.uuid or "").lower() == loader):
            return True
        if p.type in ESP_TYPES and partitions.probe(path, p.start, p.size).label == BOOT_FS_LABEL:
            return True
    return False


def _keys(rdev: int) -> set[str]:
    """A disk and its partitions (or one partition), as "MAJ:MIN"."""
    nums = [rdev] if blockdev.is_partition(rdev) else [rdev, *blockdev.partitions_of(rdev)]
    return {f"{os.major(n)}:{os.minor(n)}" for n in nums}


def mounted(rdev: int, *, all_mounts: list[Mount] | None = None) -> list[Mount]:
    """The mounts of a disk, its partitions, and what is built on them (device-mapper, md)."""
    keys = _keys(rdev)
    all_mounts = mounts() if all_mounts is None else all_mounts
    mine = [m for m in all_mounts if m.devnum in keys]
    for m in all_mounts:
        if m.devnum in keys or not m.source.startswith("/dev/"):
            continue
        try:
            under = {f"{os.major(s)}:{os.minor(s)}" for s in blockdev.slaves(blockdev.devnum_of(m.devnum))}
        except (OSError, ValueError):
            continue
        if under & keys:
            mine.append(m)
    return mine


def writable_mounts(rdev: int) -> list[str]:
    """Mountpoints of a disk (or its partitions) that are mounted read-write."""
    out = []
    for m in mounted(rdev):
        try:
            if os.statvfs(m.mountpoint).f_flag & os.ST_RDONLY:
                continue
        except OSError:
            pass
        out.append(m.mountpoint)
    return out


@dataclass(frozen=True)
class Usage:
    """Facts about a disk that decide whether it may be written."""

    mountpoints: tuple[str, ...]
    system: bool
    boot_medium: bool
    swap: bool
    holders: tuple[str, ...]

    def refusal(self) -> str | None:
        if self.boot_medium:
            return "it is the boot stick of this appliance"
        if self.system:
            return "it holds the running system"
        if self.mountpoints:
            return f"it is mounted at {', '.join(self.mountpoints)}"
        if self.swap:
            return "it is in use as swap"
        if self.holders:
            return f"it is in use by {', '.join(self.holders)}"
        return None


def usage(rdev: int, table: partitions.Table | None = None) -> Usage:
    """How a disk (and its partitions) is in use right now."""
    mine = mounted(rdev)
    mountpoints = tuple(sorted({m.mountpoint for m in mine}))
    keys = _keys(rdev)
    hold: list[str] = []
    for key in sorted(keys):
        hold.extend(blockdev.holders(blockdev.devnum_of(key)))
    path = blockdev.node_path(rdev)
    return Usage(
        mountpoints,
        any(m.mountpoint in SYSTEM_MOUNTS for m in mine),
        bool(path) and is_boot_stick(path or "", table),
        bool(swaps() & keys),
        tuple(sorted(set(hold))),
    )
