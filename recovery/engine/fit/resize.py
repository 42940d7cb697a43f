"""Each filesystem's resizing, by its own well-kept tool, on a device of the copy-on-write view (never
the source): how small it can become, whether it is clean, shrink, grow, and the boot sector of a
partition that moved. docs/fitting.md has the table."""

from __future__ import annotations

import os
import re
import struct
import threading

from recovery import run
from recovery.disks import partitions
from recovery.engine.fit import fat, filecopy, mounts
from recovery.errors import RefusedError

EXT = ("ext2", "ext3", "ext4")
# Swap is made again, smaller, with its UUID and label; XFS and exFAT are copied file by file into smaller ones.
# Btrfs is resized in place, mounted on the view: its subvolumes, snapshots and shared extents stay as they are.
# FAT16 and FAT32 are resized by fatresize, each kept its type (fat.py).
SHRINKS = (*EXT, "ntfs", "vfat", "swap", "btrfs", *filecopy.COPIED)
GROWS = (*EXT, "ntfs", "vfat", "xfs", "btrfs", *filecopy.GROWN)  # swap keeps its size on a larger disk
# Mounted (by the kernel where it has the driver) to be resized on the view or copied from the source.
MOUNTED = ("xfs", "btrfs", "exfat")
BTRFS_ROOM = 64 << 20  # over btrfs's smallest device size: a shrink to exactly that can run out of space
SWAP_SMALLEST = 64 << 20
# Why a filesystem keeps its size (it may still move): the plan names it when the target is too small.
KEPT = {
    "f2fs": "F2FS is kept at its size (a file-level copy is not built yet)",
    "crypto_LUKS": "LUKS is kept as it is: what it holds cannot be resized from outside",
    "LVM2_member": "LVM is kept as it is (its volumes are not resized yet)",
    "linux_raid_member": "a RAID member is kept as it is",
}
HIBERNATED = (
    "Windows was hibernated or shut down with Fast Startup: start Windows, turn Fast Startup off "
    "(Control Panel, Power Options, 'Choose what the power buttons do'), shut down, and try again"
)


def why_kept(fstype: str | None) -> str:
    """Why a partition with this filesystem cannot shrink ("" when it can)."""
    if fstype in SHRINKS:
        return ""
    if fstype is None:
        return "no filesystem this tool knows"
    return KEPT.get(fstype, f"{fstype} is not resized by this tool")


def measure(dev: str, fstype: str | None, number: int, *, shrinks: bool = True) -> tuple[int | None, int | None]:
    """(the smallest size the filesystem on ``dev`` can be shrunk to, the bytes it uses), read-only; a dirty
    filesystem is refused (the source is never repaired). (None, None) for one that cannot shrink.
    ``shrinks``: False when nothing is to shrink (a grow): an XFS is then only checked."""
    if fstype in EXT:
        check = run.run(["e2fsck", "-f", "-n", dev], check=False)
        if check.returncode != 0:
            raise _dirty(number, fstype, "e2fsck -f -n", check.stdout + check.stderr,
                         "check it with e2fsck on the source machine first")  # fmt: skip
        blocks = _number(run.output(["resize2fs", "-P", dev]), r"minimum size of the filesystem: (\d+)")
        header = run.output(["dumpe2fs", "-h", dev])
        size = _number(header, r"Block size:\s+(\d+)")
        used = _number(header, r"Block count:\s+(\d+)") - _number(header, r"Free blocks:\s+(\d+)")
        return blocks * size, used * size
    if fstype == "ntfs":
        proc = run.run(["ntfsresize", "--info", "--no-progress-bar", dev], check=False)
        words = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode != 0:
            raise _ntfs_refusal(number, words)
        in_use = re.search(r"Space in use\s*:\s*(\d+) MB", words)  # ntfsresize's MB: 10**6 bytes
        return _number(words, r"You might resize at (\d+) bytes"), int(in_use.group(1)) * 10**6 if in_use else None
    if fstype == "vfat":
        return fat.measure(dev, number, shrinks=shrinks)
    if fstype == "swap":  # nothing in it outlives a reboot (a hibernated system's is "swsuspend", kept whole)
        return SWAP_SMALLEST, None
    if fstype == "btrfs":
        return _measure_btrfs(dev, number)
    if fstype in filecopy.COPIED:  # it cannot shrink in place: a smaller copy is made; checked clean first
        _check_copied(dev, fstype, number)
        if not shrinks:  # the walk over its files that sizes a smaller copy is not needed to grow it
            return None, None
        used = filecopy.used_bytes(dev, fstype)
        return filecopy.smallest(used, fstype), used
    return None, None


# The read-only checker of each filesystem copied file by file, and what to do when it finds one not clean.
COPIED_CHECKS = {
    "xfs": (["xfs_repair", "-n"], "mount it once on the source machine (or run xfs_repair there) first"),
    "exfat": (["fsck.exfat", "-n"], "check it on the machine that wrote it (chkdsk in Windows, fsck.exfat) first"),
}


def _check_copied(dev: str, fstype: str, number: int) -> None:
    """Refuse a filesystem to be copied that its checker (read-only) does not find clean, or an exFAT whose
    volume-dirty flag is set (not unmounted cleanly: fsck.exfat -n does not look at it)."""
    argv, hint = COPIED_CHECKS[fstype]
    check = run.run([*argv, dev], check=False)
    if check.returncode != 0:
        raise _dirty(number, fstype, " ".join(argv), check.stdout + check.stderr, hint)
    if fstype == "exfat" and filecopy.exfat_boot(dev).dirty:
        raise _dirty(number, fstype, "its boot sector", b"the volume-dirty flag is set: it was not unmounted cleanly",
                     hint)  # fmt: skip


def shrink(dev: str, fstype: str, size: int, cancel: threading.Event | None = None) -> None:
    """Shrink the filesystem on ``dev`` to ``size`` bytes; a ``cancel`` stops the tool."""
    if fstype in EXT:
        run.run(["resize2fs", "-f", dev, f"{size // 1024}K"], cancel=cancel)
    elif fstype == "ntfs":
        run.run(["ntfsresize", "--force", "--no-progress-bar", "--size", str(size), dev], input=b"y\n", cancel=cancel)
    elif fstype == "vfat":
        fat.resize(dev, size, cancel)
    elif fstype == "swap":
        remake_swap(dev, size)
    elif fstype == "btrfs":
        _resize_btrfs(dev, str(size), cancel)
    else:
        raise RefusedError(f"{fstype} cannot be shrunk by this tool")


def remake_swap(dev: str, size: int) -> None:
    """A swap area of ``size`` bytes at the start of ``dev``, with the UUID and label of the one there."""
    found = partitions.probe(dev)
    argv = ["mkswap", *(["-U", found.uuid] if found.uuid else [])]
    argv += ["-L", found.label] if found.label else []
    run.run([*argv, dev, str(size // 1024)])  # the size in KiB: mkswap's count of 1 KiB blocks


def grow(dev: str, fstype: str, cancel: threading.Event | None = None) -> None:
    """Grow the filesystem on ``dev`` to fill it (XFS grows only mounted: ``dev`` is the view's, mounted here
    for that alone, never the target's, and by its own device: ``nouuid`` lets it be mounted beside the
    source it is a copy of)."""
    if fstype in EXT:
        run.run(["resize2fs", "-f", dev], cancel=cancel)
    elif fstype == "ntfs":
        run.run(["ntfsresize", "--force", "--no-progress-bar", dev], input=b"y\n", cancel=cancel)
    elif fstype == "vfat":
        fat.resize(dev, None, cancel)
    elif fstype == "xfs":
        with mounts.mounted(dev, fstype, writable=True) as mnt:
            run.run(["xfs_growfs", mnt], cancel=cancel)
    elif fstype == "btrfs":
        _resize_btrfs(dev, "max", cancel)
    else:
        raise RefusedError(f"{fstype} cannot be grown by this tool")


def _measure_btrfs(dev: str, number: int) -> tuple[int, int]:
    """A Btrfs on one device, clean (its checker, and no log tree left to replay), measured mounted
    read-only: the smallest device it fits (``min-dev-size``) with some room, and the bytes it uses."""
    devices = mounts.super_field(dev, "num_devices")
    if devices != "1":
        raise RefusedError(f"a Btrfs on {devices} devices is kept as it is (its devices are not resized together)")
    check = run.run(["btrfs", "check", "--readonly", dev], check=False)
    if check.returncode != 0:
        raise _dirty(number, "btrfs", "btrfs check --readonly", check.stdout + check.stderr,
                     "check it on the source machine first")  # fmt: skip
    if mounts.super_field(dev, "log_root") != "0":
        raise _dirty(number, "btrfs", "its superblock", b"a log tree is left to replay",
                     "mount it once on the source machine and unmount it cleanly first")  # fmt: skip
    with mounts.mounted(dev, "btrfs", writable=False) as mnt:
        low = _number(run.output(["btrfs", "inspect-internal", "min-dev-size", mnt]), r"^(\d+) bytes")
        st = os.statvfs(mnt)
    return low + max(BTRFS_ROOM, low // 20), (st.f_blocks - st.f_bfree) * st.f_frsize


def _resize_btrfs(dev: str, size: str, cancel: threading.Event | None) -> None:
    """Resize the Btrfs on ``dev`` (a device of the view) to ``size`` bytes or "max", mounted there."""
    devid = mounts.super_field(dev, "dev_item.devid")
    with mounts.mounted(dev, "btrfs", writable=True) as mnt:
        run.run(["btrfs", "filesystem", "resize", f"{devid}:{size}", mnt], cancel=cancel)


# FAT and NTFS boot sectors name the partition's first sector ("hidden sectors", BPB offset 0x1C): Windows
# and some firmware boot only when it is right, so a moved partition gets its new one.
BOOT_SIGNATURES = {"ntfs": b"NTFS    ", "vfat": None}
HIDDEN_SECTORS = struct.Struct("<I")


def set_hidden_sectors(dev: str, fstype: str | None, first_sector: int) -> bool:
    """Write the partition's new first sector into its boot sector (and NTFS's backup at the volume's end;
    exFAT's PartitionOffset in both boot regions); False when the filesystem has no such field or it does
    not fit."""
    if fstype == "exfat":
        return _set_exfat_offset(dev, first_sector)
    if fstype not in BOOT_SIGNATURES or first_sector >= 1 << 32:
        return False
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        boot = os.pread(fd, 512, 0)
        if len(boot) < 512 or boot[510:512] != b"\x55\xaa":
            return False
        size = os.lseek(fd, 0, os.SEEK_END)
        places = {0}
        if fstype == "ntfs":
            if boot[3:11] != BOOT_SIGNATURES["ntfs"]:
                return False
            sector = int.from_bytes(boot[11:13], "little") or 512
            # The backup: past the volume (mkntfs), or on the partition's last sector (ntfsresize)
            places |= {int.from_bytes(boot[0x28:0x30], "little") * sector, size - sector}
        elif boot[0x16:0x18] == b"\0\0":  # FAT32 (no 16-bit FAT size): its backup boot sector
            sector = int.from_bytes(boot[11:13], "little") or 512
            places.add(int.from_bytes(boot[0x32:0x34], "little") * sector)
        for at in sorted(places):
            found = os.pread(fd, 512, at) if at + 512 <= size else b""
            if found[510:512] == b"\x55\xaa" and (fstype != "ntfs" or found[3:11] == BOOT_SIGNATURES["ntfs"]):
                os.pwrite(fd, HIDDEN_SECTORS.pack(first_sector), at + 0x1C)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


EXFAT_REGION = 12  # sectors of an exFAT boot region: the boot sector, 8 extended, OEM, reserved, checksum
EXFAT_OFFSET = slice(64, 72)  # PartitionOffset: the volume's first sector on its disk (0: not given)


def _set_exfat_offset(dev: str, first_sector: int) -> bool:
    """exFAT's PartitionOffset, in its main and backup boot regions, with each region's checksum made again;
    a volume that gives none (0) is left so."""
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        boot = os.pread(fd, 512, 0)
        if len(boot) < 512 or boot[3:11] != b"EXFAT   " or not 9 <= boot[108] <= 12:
            return False
        sector = 1 << boot[108]
        for region in (0, EXFAT_REGION * sector):
            data = bytearray(os.pread(fd, EXFAT_REGION * sector, region))
            if len(data) < EXFAT_REGION * sector or data[3:11] != b"EXFAT   ":
                continue
            if int.from_bytes(data[EXFAT_OFFSET], "little") == 0:
                continue
            data[EXFAT_OFFSET] = first_sector.to_bytes(8, "little")
            total = exfat_checksum(bytes(data[: 11 * sector]))
            data[11 * sector :] = total.to_bytes(4, "little") * (sector // 4)
            os.pwrite(fd, bytes(data), region)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def exfat_checksum(sectors: bytes) -> int:
    """The exFAT boot checksum of a boot region's first 11 sectors (the volume flags and the percent in
    use, which change as it is used, left out)."""
    total = 0
    for i, byte in enumerate(sectors):
        if i in (106, 107, 112):
            continue
        total = (((total & 1) << 31) | (total >> 1)) + byte & 0xFFFFFFFF
    return total


def _number(text: str, pattern: str) -> int:
    found = re.search(pattern, text)
    if found is None:
        raise RefusedError(f"could not read the resizing tool's answer ({pattern.split('(')[0].strip()})")
    return int(found.group(1))


def _dirty(number: int, fstype: str | None, tool: str, output: bytes, hint: str) -> RefusedError:
    last = " ".join(output.decode(errors="replace").split())[-200:]
    return RefusedError(
        f"partition {number} ({fstype}) is not clean ({tool}: {last}); it is not shrunk or grown, "
        "and the source is never repaired",
        hint=hint,
    )


def _ntfs_refusal(number: int, words: str) -> RefusedError:
    text = " ".join(words.split())
    if "hibernat" in text.lower() or "unsafe state" in text.lower():
        return RefusedError(f"partition {number} (ntfs) cannot be resized: {HIBERNATED}")
    return _dirty(number, "ntfs", "ntfsresize --info", words.encode(), "run chkdsk /f on it in Windows first")
