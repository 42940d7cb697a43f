"""FAT16 and FAT32 resized by Debian's fatresize (libparted's FAT resizer) on a device of the view, each kept
the type it is: asked for a size its type cannot have, fatresize (with ``-f``) silently makes a FAT32 a FAT16
(a Windows or EFI boot loader then no longer starts) or a FAT16 a FAT32. So the smallest size measured keeps
FAT32's least clusters at its cluster size, a FAT16 grows no further than it stays FAT16, and the type is
checked again after every resize. fatresize rewrites the boot sector: its label, serial and first-sector
field are put back as they were."""

from __future__ import annotations

import os
import re
import struct
import threading
from dataclasses import dataclass

from recovery import run
from recovery.disks import blockdev
from recovery.errors import RefusedError

# Microsoft's rule: a FAT's type is its count of clusters. libparted's resizer keeps a FAT16 between 32760
# and 65520 clusters (it makes the clusters smaller to shrink one, never larger to grow one).
FAT32_LEAST = 65525
FAT16_LEAST = 4085
FAT16_MOST = 65520
ROOM = 32  # clusters over a least (or under a most): libparted lays reserved sectors and FATs out its own way
BOOT = 512
FUZZ = 10**6  # fatresize lands a size on whole MB (10^6 bytes) and a sector, above or below the one asked
TOOL_SECONDS = 600  # for fsck.fat and fatresize's measuring, on the source's (possibly crafted) FAT
KEEP = 64 << 10  # bytes of their output kept


@dataclass(frozen=True)
class Bpb:
    """What a FAT's boot sector says of its layout (sizes in its sectors of ``sector`` bytes)."""

    sector: int
    per_cluster: int
    reserved: int
    fats: int
    root_entries: int
    total: int
    fat_size: int
    fat32: bool  # its 16-bit FAT size is 0: a FAT32 by its boot sector

    @property
    def cluster(self) -> int:
        return self.sector * self.per_cluster

    @property
    def clusters(self) -> int:
        """Its count of data clusters."""
        data = self.total - self.reserved - self.fats * self.fat_size - self._root_sectors()
        return max(0, data // self.per_cluster)

    @property
    def bits(self) -> int:
        """12, 16 or 32: its type by its count of clusters (Microsoft's rule)."""
        if self.clusters < FAT16_LEAST:
            return 12
        return 16 if self.clusters < FAT32_LEAST else 32

    @property
    def size(self) -> int:
        return self.total * self.sector

    def _root_sectors(self) -> int:
        return -(-self.root_entries * 32 // self.sector)

    def size_for(self, clusters: int) -> int:
        """Bytes a FAT of this type and cluster size takes to hold ``clusters`` clusters: its reserved sectors
        with a cluster's room (libparted aligns its data), its FATs, a FAT16's root folder, the clusters."""
        entry = 4 if self.fat32 else 2
        fat = -(-(clusters + 2) * entry // self.sector)
        sectors = (
            self.reserved + self.per_cluster + self.fats * fat + self._root_sectors() + clusters * self.per_cluster
        )
        return sectors * self.sector


def parse_bpb(boot: bytes) -> Bpb:
    """The layout a FAT boot sector describes; a :class:`RefusedError` when it is not one."""
    if len(boot) < BOOT or boot[510:512] != b"\x55\xaa":
        raise RefusedError("its FAT boot sector is not valid")
    sector, per_cluster, reserved, fats, root_entries, total16 = struct.unpack_from("<HBHBHH", boot, 11)
    fat16_size, total32, fat32_size = struct.unpack_from("<H", boot, 22)[0], *struct.unpack_from("<II", boot, 32)
    if sector not in (512, 1024, 2048, 4096) or per_cluster == 0 or per_cluster & (per_cluster - 1) or not fats:
        raise RefusedError("its FAT boot sector is not valid")
    fat32 = fat16_size == 0
    return Bpb(sector, per_cluster, reserved, fats, root_entries, total16 or total32,
               fat32_size if fat32 else fat16_size, fat32)  # fmt: skip


def read_bpb(dev: str) -> Bpb:
    with open(dev, "rb") as f:
        return parse_bpb(f.read(BOOT))


def smallest(bpb: Bpb, used_clusters: int) -> int:
    """The least bytes the FAT can be resized to and keep its type: FAT32's least clusters at its cluster size
    (never fewer: fatresize would make it a FAT16), and room for the clusters it uses and fatresize's
    rounding."""
    least = FAT32_LEAST if bpb.fat32 else FAT16_LEAST
    return bpb.size_for(max(least, used_clusters) + ROOM) + FUZZ


def estimate(size: int, used: int) -> int:
    """About the smallest a FAT of ``size`` bytes using ``used`` can become, without its boot sector (what the
    wizard knows of a peer's disk): mkfs.fat's defaults (a FAT32 of 4 KiB clusters from 512 MiB, else a FAT16
    of 2 KiB clusters) give the least clusters it keeps; erring large, as the sender measures exactly."""
    fat32 = size >= 512 << 20
    least = FAT32_LEAST * _default_cluster(size) if fat32 else FAT16_LEAST * 2048
    return max(used + used // 10, least) + 4 * FUZZ


def _default_cluster(size: int) -> int:
    """The cluster size Windows' and mkfs.fat's defaults give a FAT32 of ``size`` bytes (larger clusters on
    larger volumes: a FAT32 formatted over 32 GiB has 32 KiB clusters, so at least 2 GiB)."""
    for limit, cluster in ((8 << 30, 4096), (16 << 30, 8192), (32 << 30, 16384)):
        if size < limit:
            return cluster
    return 32768


def largest(bpb: Bpb) -> int | None:
    """The most bytes the FAT can grow to and keep its type (None: no bound that matters, a FAT32)."""
    return None if bpb.fat32 else bpb.size_for(FAT16_MOST - ROOM)


def measure(dev: str, number: int, *, shrinks: bool = True) -> tuple[int | None, int]:
    """(the smallest size the FAT16 or FAT32 on ``dev`` can be resized to keeping its type, the bytes it
    uses), read-only; a dirty one (``fsck.vfat -n``) or a FAT12 is refused, and kept at its size, and so is
    one fatresize cannot shrink when it is to shrink (else its smallest is None: it only grows)."""
    if run.find_tool("fatresize") is None:
        raise RefusedError("FAT is kept at its size (fatresize, Debian's package fatresize, is not installed)")
    bpb = read_bpb(dev)
    if bpb.size > _device(dev)[0]:
        raise RefusedError(f"its FAT says it is {bpb.size} bytes, larger than its partition: it is kept at its size")
    if bpb.fat32 and bpb.bits != 32:
        raise RefusedError(f"a FAT32 of {bpb.clusters} clusters (under FAT32's {FAT32_LEAST}) is kept at its size")
    if bpb.bits == 12:
        raise RefusedError("a FAT12 is kept at its size (fatresize resizes FAT16 and FAT32 only)")
    if not bpb.fat32 and bpb.bits != 16:
        raise RefusedError(f"a FAT16 of {bpb.clusters} clusters (over FAT16's {FAT32_LEAST - 1}) is kept at its size")
    check = run.run(["fsck.vfat", "-n", dev], check=False, timeout=TOOL_SECONDS, keep=KEEP)
    words = (check.stdout + check.stderr).decode(errors="replace")
    if check.returncode != 0 and not _only_advisory(check.returncode, words):
        last = " ".join(words.split())[-200:]
        raise RefusedError(
            f"partition {number} (vfat) is not clean (fsck.vfat -n: {last}); it is not shrunk or grown, "
            "and the source is never repaired",
            hint="check it with fsck.vfat (or chkdsk in Windows) on the source machine first",
        )
    found = re.search(r"(\d+)/(\d+) clusters", words)
    used = int(found.group(1)) if found else bpb.clusters
    info = run.run(["fatresize", "--info", dev], check=False, timeout=TOOL_SECONDS, keep=KEEP)
    low = _number(info.stdout.decode(errors="replace"), "Min size")
    if low >= bpb.size:  # libparted's own bound: it shrinks no FAT32 of 512-byte clusters, say
        if shrinks:
            raise RefusedError(f"fatresize cannot shrink this FAT{bpb.bits} (of {bpb.cluster}-byte clusters)")
        return None, used * bpb.cluster
    # libparted refuses a size under its own smallest: over it by fatresize's rounding, on whole MB
    return max(-(-low // FUZZ) * FUZZ + FUZZ, smallest(bpb, used)), used * bpb.cluster


# What fsck.fat -n says of a FAT it finds fine but for FSInfo's free-cluster count, which is advisory
# (Microsoft's specification; Windows and firmware leave it stale) and which fatresize writes again.
_ADVISORY = re.compile(
    r"fsck\.fat \S+ \(.*\)|Free cluster summary wrong \(\d+ vs\. really \d+\)|Auto-correcting\."
    r"|Leaving filesystem unchanged\.|\S+: \d+ files, \d+/\d+ clusters"
)


def _only_advisory(code: int, words: str) -> bool:
    """fsck.fat -n found nothing wrong but the advisory free-cluster count."""
    lines = [line.strip() for line in words.splitlines() if line.strip()]
    return code == 1 and all(_ADVISORY.fullmatch(line) for line in lines)


def resize(dev: str, size: int | None, cancel: threading.Event | None = None) -> None:
    """Resize the FAT on ``dev`` to ``size`` bytes (None: to fill ``dev``, or as far as a FAT16 stays one); its
    type is checked to be the same after (else refused: the view is thrown away), its label, serial and
    first-sector field put back, and it must end within ``dev``."""
    before = _boot(dev)
    bpb = parse_bpb(before)
    room, sector = _device(dev)
    want = min(room if size is None else size, room, largest(bpb) or room)
    # fatresize makes it a whole MB and a sector: asked whole MB a sector under, it ends within ``want``
    ask = (want - sector) // FUZZ * FUZZ
    if size is None and ask <= bpb.size:  # a FAT16 already as large as it stays one: never shrunk to grow it
        return
    run.run(["fatresize", "--force-yes", "--partition", "1", "--size", str(ask), dev], cancel=cancel)
    after = parse_bpb(_boot(dev))
    if after.fat32 != bpb.fat32 or after.bits != bpb.bits:
        raise RefusedError(
            f"fatresize made a {_kind(bpb)} a {_kind(after)} ({after.clusters} clusters of {after.cluster} bytes): "
            "its type must not change (a boot loader on it would no longer start); nothing was written to the target"
        )
    if after.size > want:
        raise RefusedError(f"fatresize made the FAT {after.size} bytes, past its partition's {want}")
    _restore(dev, before, after)


def _kind(bpb: Bpb) -> str:
    """A FAT's type as its boot sector and its count of clusters say (a FAT32 boot sector of too few: both)."""
    if (bpb.bits == 32) == bpb.fat32:
        return f"FAT{bpb.bits}"
    return f"FAT{bpb.bits} by its clusters, in a FAT{32 if bpb.fat32 else 16} boot sector"


def _restore(dev: str, before: bytes, after: Bpb) -> None:
    """Put the boot sector's serial, label and first sector back as ``before`` had them (in its backup too);
    the serial and label only where its extended boot signature says they are there."""
    ids = slice(0x43, 0x52) if after.fat32 else slice(0x27, 0x36)  # the serial, then the 11-byte label
    signed = before[0x42 if after.fat32 else 0x26] in (0x28, 0x29)
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        boot = os.pread(fd, BOOT, 0)
        places = [0]
        if after.fat32:
            places.append(struct.unpack_from("<H", boot, 0x32)[0] * after.sector)
        for at in places:
            found = bytearray(os.pread(fd, BOOT, at))
            if at and (found[510:512] != b"\x55\xaa" or at >= after.reserved * after.sector):
                continue
            found[0x1C:0x20] = before[0x1C:0x20]
            if signed:
                found[ids] = before[ids]
            os.pwrite(fd, bytes(found), at)
        os.fsync(fd)
    finally:
        os.close(fd)


def _boot(dev: str) -> bytes:
    with open(dev, "rb") as f:
        return f.read(BOOT)


def _device(dev: str) -> tuple[int, int]:
    """The device's size and its logical sector size (libparted's unit)."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END), blockdev.logical_sector_size(fd) or BOOT
    finally:
        os.close(fd)


def _number(text: str, field: str) -> int:
    """A field of ``fatresize --info`` (bytes), whatever libparted's noise is printed around it."""
    found = re.search(rf"{field}:\s*(\d+)", text)
    if found is None:
        raise RefusedError(f"could not read fatresize's answer ({field})")
    return int(found.group(1))
