"""Which byte ranges of a source must be copied, per mode.

``exact``: everything. ``used``: for each partition whose filesystem
partclone understands, only the blocks partclone's domain map (``-D``) marks
as used; the partition table, the gaps between partitions and partitions
partclone cannot read are copied whole. A swap partition needs only its
header (a hibernation image, ``swsuspend``, is copied whole).
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import blake3

from recovery import run
from recovery.disks import blockdev, partitions
from recovery.protocol.messages import MapPart

ALIGN = 4096
SWAP_HEADER = 64 << 10

PARTCLONE_TOOLS = {
    "ext2": "partclone.extfs",
    "ext3": "partclone.extfs",
    "ext4": "partclone.extfs",
    "vfat": "partclone.fat",
    "exfat": "partclone.exfat",
    "ntfs": "partclone.ntfs",
    "xfs": "partclone.xfs",
    "btrfs": "partclone.btrfs",
    "hfsplus": "partclone.hfsp",
    "f2fs": "partclone.f2fs",
    "minix": "partclone.minix",
}

Extent = tuple[int, int]  # (offset, length)


@dataclass
class UsedMap:
    size: int
    extents: list[Extent]
    parts: list[MapPart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.extents)

    def digest(self) -> str:
        h = blake3.blake3()
        for off, n in self.extents:
            h.update(struct.pack("<QQ", off, n))
        return h.hexdigest()


def merge(extents: list[Extent]) -> list[Extent]:
    """Sort and join touching or overlapping extents; drop empty ones."""
    out: list[Extent] = []
    for off, n in sorted(e for e in extents if e[1] > 0):
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_n = out[-1]
            out[-1] = (last_off, max(last_off + last_n, off + n) - last_off)
        else:
            out.append((off, n))
    return out


def parse_domain_map(text: str) -> list[Extent]:
    """The used ranges ('+') of a ddrescue-style domain log written by partclone."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            continue  # the "current position" line
        pos, size, status = fields
        if status == "+":
            out.append((int(pos, 16), int(size, 16)))
    return out


def _align_within(extents: list[Extent], base: int, limit: int) -> list[Extent]:
    """Shift by ``base``, round outwards to ALIGN, clamp to [base, base+limit)."""
    out = []
    for off, n in extents:
        start = base + off
        end = start + n
        start = max(base, start - (start % ALIGN))
        end = min(base + limit, -(-end // ALIGN) * ALIGN)
        if end > start:
            out.append((start, end - start))
    return out


@contextlib.contextmanager
def partition_device(source: str, part: partitions.Partition) -> Iterator[str | None]:
    """A device node holding exactly ``part``: the kernel's, or a read-only loop device."""
    if part.node:
        yield part.node
        return
    node = blockdev.inspect(source)
    if node.is_block:
        for num in blockdev.partitions_of(node.rdev):
            start = blockdev.read_attr(blockdev.sysfs_dir(num) / "start")
            size = blockdev.read_attr(blockdev.sysfs_dir(num) / "size")
            if start and size and int(start) * 512 == part.start and int(size) * 512 == part.size:
                path = blockdev.node_path(num)
                if path and os.path.exists(path):
                    yield path
                    return
    proc = run.run(
        ["losetup", "--find", "--show", "--read-only", "--offset", str(part.start),
         "--sizelimit", str(part.size), source],
        check=False,
    )
    loop = proc.stdout.decode().strip()
    if proc.returncode != 0 or not loop:
        yield None
        return
    try:
        yield loop
    finally:
        run.run(["losetup", "--detach", loop], check=False)


def partclone_map(tool: str, device: str) -> list[Extent]:
    """Used ranges of the filesystem on ``device``, relative to its start."""
    with tempfile.TemporaryDirectory(prefix="recovery-map-") as tmp:
        domain = os.path.join(tmp, "domain")
        # "-f 0": otherwise partclone waits up to 2 s for its progress thread to end.
        run.run([tool, "-D", "-s", device, "-o", domain, "-L", os.path.join(tmp, "log"), "-q", "-f", "0"],
                stdout=subprocess.DEVNULL)
        with open(domain) as f:
            return parse_domain_map(f.read())


def build_map(
    source: str,
    size: int,
    mode: str,
    *,
    on_progress: Callable[[str], None] | None = None,
) -> UsedMap:
    """The extents to copy from ``source`` (a disk, partition or image file)."""
    table = partitions.read_table(source)
    if table is not None:
        parts = [p for p in table.partitions if p.start < size]
    else:
        parts = [partitions.Partition(number=0, start=0, size=size, type="")]
    result = UsedMap(size=size, extents=[])
    covered: list[Extent] = []
    for p in parts:
        psize = min(p.size, size - p.start)
        sig = partitions.probe(source, p.start, psize)
        method, extents = "whole", [(p.start, psize)]
        if mode == "used":
            if on_progress:
                on_progress(f"reading the block map of partition {p.number} ({sig.fstype or 'unknown'})")
            method, extents = _used_extents(source, p, psize, sig.fstype, result.warnings)
        covered.append((p.start, psize))
        result.extents.extend(extents)
        result.parts.append(
            MapPart(number=p.number, start=p.start, size=psize, fstype=sig.fstype,
                    method=method, bytes=sum(n for _, n in extents))  # type: ignore[arg-type]
        )
    # Everything outside the partitions: tables, boot code, gaps, backup GPT.
    pos = 0
    for off, n in merge(covered):
        if off > pos:
            result.extents.append((pos, off - pos))
        pos = max(pos, off + n)
    if pos < size:
        result.extents.append((pos, size - pos))
    result.extents = merge(result.extents)
    return result


def _used_extents(
    source: str, p: partitions.Partition, psize: int, fstype: str | None, warnings: list[str]
) -> tuple[str, list[Extent]]:
    whole = [(p.start, psize)]
    if fstype == "swap":
        return "used", [(p.start, min(SWAP_HEADER, psize))]
    tool = PARTCLONE_TOOLS.get(fstype or "")
    if tool is None:
        return "whole", whole
    where = f"partition {p.number}" if p.number else "the filesystem"
    if run.find_tool(tool) is None:
        warnings.append(f"{tool} is not installed: copying {where} ({fstype}) whole")
        return "whole", whole
    with partition_device(source, p) as dev:
        if dev is None:
            warnings.append(f"cannot open {where} as a device (needs root): copying it whole")
            return "whole", whole
        try:
            extents = partclone_map(tool, dev)
        except run.CommandError as e:
            warnings.append(f"partclone could not read the {fstype} on {where}: copying it whole ({e})")
            return "whole", whole
    return "used", _align_within(extents, p.start, psize)
