"""What a used-block map must hold beyond partclone's, per filesystem.

partclone's ``-D`` map is evidence, not truth (facts checked with 0.3.23 on
real filesystems, cloned and run through each filesystem's own checker):

- **Btrfs**: the map can leave out a snapshot's tree blocks and covers only
  one copy of DUP blocks. Every allocated chunk (the device extents of the
  dev tree, which hold both DUP copies) replaces it: a superset that stays
  close to the used space, since Btrfs allocates chunks as it fills up.
- **NTFS**: the backup boot sector (just past the volume, the partition's
  last sector) is not in the map.
- **Every filesystem**: its superblocks and their copies (ext's backup
  superblocks and group descriptors, XFS's AG headers, FAT's reserved
  sectors and every FAT, exFAT's main and backup boot regions, Btrfs's
  superblock mirrors, HFS+'s alternate volume header) are added whether or
  not partclone lists them: a few blocks, and the filesystem's own tools
  find it by them.

Extents here are (offset, length) relative to the partition's start.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from recovery import run

Extent = tuple[int, int]

BTRFS_MIRRORS = (64 << 10, 64 << 20, 256 << 30)  # superblock copies
BTRFS_RESERVED = 1 << 20  # the first MiB: boot loaders may live there
BTRFS_NOTE = "allocated chunks (partclone's map can miss snapshot trees and DUP copies)"


def _read(device: str, offset: int, length: int) -> bytes:
    with open(device, "rb") as f:
        f.seek(offset)
        return f.read(length)


def btrfs(device: str, size: int) -> list[Extent]:
    """Every device extent (allocated chunk), the superblocks, the first MiB."""
    text = run.output(["btrfs", "inspect-internal", "dump-tree", "-t", "dev", device])
    out: list[Extent] = [(0, BTRFS_RESERVED)]
    out += [(m, 4096) for m in BTRFS_MIRRORS if m + 4096 <= size]
    start: int | None = None
    for line in text.splitlines():
        key = re.search(r"\bDEV_EXTENT (\d+)\)", line)
        if key:
            start = int(key.group(1))
            continue
        length = re.search(r"\blength (\d+)", line)
        if length and start is not None:
            out.append((start, int(length.group(1))))
            start = None
    if len(out) <= len(BTRFS_MIRRORS) + 1:
        raise run.CommandError(
            ["btrfs", "inspect-internal", "dump-tree", "-t", "dev", device], 0, "no device extents found"
        )
    return out


def ntfs(device: str, size: int) -> list[Extent]:
    """The boot region and the backup boot sector."""
    boot = _read(device, 0, 512)
    bps = struct.unpack_from("<H", boot, 11)[0] or 512
    total = struct.unpack_from("<Q", boot, 0x28)[0]
    out = [(0, 8192), (size - bps, bps)]
    if 0 < total * bps < size:
        out.append((total * bps, bps))
    return out


def fat(device: str, size: int) -> list[Extent]:
    """Boot sector, backup boot sector and FSInfo (reserved sectors), every
    FAT, and the FAT12/16 root directory."""
    bpb = _read(device, 0, 512)
    bps, _spc, reserved, nfats, root_entries = struct.unpack_from("<HBHBH", bpb, 11)
    fat_size = struct.unpack_from("<H", bpb, 22)[0] or struct.unpack_from("<I", bpb, 36)[0]
    bps = bps or 512
    end = (reserved + nfats * fat_size) * bps + root_entries * 32
    return [(0, min(size, max(end, bps)))]


def exfat(device: str, size: int) -> list[Extent]:
    """The main and backup boot regions (24 sectors) and every FAT."""
    boot = _read(device, 0, 512)
    bps = 1 << (boot[108] if 9 <= boot[108] <= 12 else 9)
    fat_offset, fat_length = struct.unpack_from("<II", boot, 80)
    nfats = boot[110] or 1
    return [(0, 24 * bps), (fat_offset * bps, fat_length * nfats * bps)]


def ext(device: str, size: int) -> list[Extent]:
    """The boot block, every superblock copy, group descriptor and reserved GDT block."""
    text = run.output(["dumpe2fs", device])
    block = int(re.search(r"^Block size:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    out: list[Extent] = [(0, 2048)]
    for m in re.finditer(r"superblock at (\d+), Group descriptors at (\d+)-(\d+)", text):
        first, last = int(m.group(1)), int(m.group(3))
        out.append((first * block, (last - first + 1) * block))
    for m in re.finditer(r"Reserved GDT blocks at (\d+)-(\d+)", text):
        first, last = int(m.group(1)), int(m.group(2))
        out.append((first * block, (last - first + 1) * block))
    return out


def xfs(device: str, size: int) -> list[Extent]:
    """The header sectors of every allocation group (superblock, AGF, AGI, AGFL)."""
    text = run.output(["xfs_db", "-r", "-c", "sb 0", "-c", "print agcount agblocks blocksize sectsize", device])
    values = dict(re.findall(r"^(\w+) = (\d+)$", text, re.M))
    agcount, agblocks = int(values["agcount"]), int(values["agblocks"])
    blocksize, sectsize = int(values["blocksize"]), int(values["sectsize"])
    return [(ag * agblocks * blocksize, 4 * sectsize) for ag in range(agcount)]


def hfsplus(device: str, size: int) -> list[Extent]:
    """The volume header and the alternate volume header, 1 KiB from the end."""
    return [(0, 4096), (size - 1024, 512)]


def f2fs(device: str, size: int) -> list[Extent]:
    """Both superblocks (in the first two 4 KiB blocks)."""
    return [(0, 8192)]


EXTRAS: dict[str, Callable[[str, int], list[Extent]]] = {
    "btrfs": btrfs,
    "ntfs": ntfs,
    "vfat": fat,
    "exfat": exfat,
    "ext2": ext,
    "ext3": ext,
    "ext4": ext,
    "xfs": xfs,
    "hfsplus": hfsplus,
    "f2fs": f2fs,
}
# Filesystems whose extras replace partclone's map instead of adding to it.
REPLACES = {"btrfs": BTRFS_NOTE}


def extras(fstype: str, device: str, size: int) -> list[Extent]:
    """The extents ``fstype`` needs beyond partclone's map (raises
    :class:`run.CommandError` or ValueError when the filesystem cannot be read)."""
    fn = EXTRAS.get(fstype)
    if fn is None:
        return []
    try:
        return [(off, n) for off, n in fn(device, size) if n > 0 and 0 <= off < size]
    except (OSError, KeyError, AttributeError, struct.error) as e:
        raise ValueError(f"cannot read the {fstype} layout: {e}") from None
