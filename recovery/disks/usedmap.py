"""Which byte ranges of a source must be copied, per mode.

``exact``: everything. ``used``: the partitions, and of the space outside
them only what holds partition tables and boot code (everything before the
first partition, the backup GPT, the EBRs of logical partitions); gaps
between and after partitions are not copied. Of each partition whose
filesystem partclone understands, the blocks partclone's domain map
(``-D``) marks as used plus what :mod:`recovery.disks.fsmap` knows the
filesystem needs beyond it (or instead of it, for Btrfs), plus every block
holding a signature (:mod:`recovery.disks.signatures`); partitions that
cannot be mapped are copied whole, and the plan says why. A swap partition
needs only its header (a hibernation image, ``swsuspend``, is copied whole).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import blake3

from recovery import run
from recovery.disks import fsmap, partdev, partitions, signatures
from recovery.protocol.values import MapPart

ALIGN = 4096
NOTE_MAX = 255  # a plan's note per partition (MapPart.note)
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
    skipped: int = 0  # bytes outside the partitions that are not copied (used mode)

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


def partclone_map(tool: str, device: str, *, ignore_check: bool = False) -> list[Extent]:
    """Used ranges of the filesystem on ``device``, relative to its start. ``ignore_check``: map it although
    it is marked for a check (an NTFS that ntfsresize just resized is, so that Windows checks it).
    A failure carries partclone's own words (from its log)."""
    with tempfile.TemporaryDirectory(prefix="recovery-map-") as tmp:
        domain, log = os.path.join(tmp, "domain"), os.path.join(tmp, "log")
        # "-f 0": otherwise partclone waits up to 2 s for its progress thread to end.
        try:
            argv = [
                tool,
                "-D",
                "-s",
                device,
                "-o",
                domain,
                "-L",
                log,
                "-q",
                "-f",
                "0",
                *(["-I"] if ignore_check else []),
            ]
            run.run(argv, stdout=subprocess.DEVNULL)
        except run.CommandError as e:
            raise run.CommandError(e.argv, e.returncode, _log_tail(log) or e.stderr) from None
        with open(domain) as f:
            return parse_domain_map(f.read())


def _log_tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    wrong = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
    return "; ".join((wrong or lines)[-2:])


def build_map(
    source: str,
    size: int,
    mode: str,
    *,
    on_progress: Callable[[str], None] | None = None,
    failing: bool = False,
    ignore_check: Collection[int] = (),
) -> UsedMap:
    """The extents to copy from ``source`` (a disk, partition or image file). ``failing``: a rescue's
    source, whose filesystems are probed around read errors too (:func:`partitions.probe`).
    ``ignore_check``: of a fitted disk, the partitions resized (and checked) on it, which their resizing
    tool may have marked for a check (see :func:`partclone_map`)."""
    if mode == "exact":
        parts = _partitions(source, size)[1]
        sigs = [partitions.probe(source, p.start, p.size, around_errors=failing) for p in parts]
        return UsedMap(
            size=size,
            extents=[(0, size)],
            parts=[
                MapPart(
                    number=p.number,
                    start=p.start,
                    size=p.size,
                    method="whole",
                    bytes=p.size,
                    fstype=sig.fstype,
                    note=sig.damage,
                )
                for p, sig in zip(parts, sigs, strict=True)
            ],
        )
    table, parts = _partitions(source, size)
    result = UsedMap(size=size, extents=[])
    covered: list[Extent] = []
    for p in parts:
        sig = partitions.probe(source, p.start, p.size, around_errors=failing)
        if on_progress:
            on_progress(f"reading the block map of partition {p.number} ({sig.fstype or 'unknown'})")
        checked = p.number in ignore_check
        method, extents, note = used_extents(source, p, sig.fstype, result.warnings, ignore_check=checked)
        covered.append((p.start, p.size))
        result.extents.extend(extents)
        result.parts.append(
            MapPart(
                number=p.number,
                start=p.start,
                size=p.size,
                fstype=sig.fstype,
                method=method,  # type: ignore[arg-type]
                bytes=sum(n for _, n in merge(extents)),
                note="; ".join(n for n in (sig.damage, note) if n)[:NOTE_MAX] or None,
                blkid=signatures.blkid(source, p.start, p.size),
            )
        )
    if table is not None:
        areas = [(off, min(n, size - off)) for off, n in partitions.table_areas(source, table, size) if off < size]
        result.extents.extend(_align_within(areas, 0, size))
        covered.extend(areas)
    result.extents = merge(result.extents)
    result.skipped = size - sum(n for _, n in merge(covered))
    return result


def _partitions(source: str, size: int) -> tuple[partitions.Table | None, list[partitions.Partition]]:
    """The partition table and its partitions clamped to ``size`` (or the whole source as one)."""
    table = partitions.read_table(source)
    if table is None:
        return None, [partitions.Partition(number=0, start=0, size=size, type="")]
    return table, [dataclasses.replace(p, size=min(p.size, size - p.start)) for p in table.partitions if p.start < size]


def used_extents(
    source: str, p: partitions.Partition, fstype: str | None, warnings: list[str], *, ignore_check: bool = False
) -> tuple[str, list[Extent], str | None]:
    """(method, absolute extents, note) for one partition."""
    whole = [(p.start, p.size)]
    if fstype == "swap":
        return "used", [(p.start, min(SWAP_HEADER, p.size))], None
    tool = "btrfs" if fstype in fsmap.REPLACES else PARTCLONE_TOOLS.get(fstype or "")
    if tool is None:
        return "whole", whole, f"no map for {fstype}" if fstype else "no filesystem found"
    where = f"partition {p.number}" if p.number else "the filesystem"

    def fallback(why: str) -> tuple[str, list[Extent], str]:
        warnings.append(f"{where} ({fstype}): {why}; copying it whole")
        return "whole", whole, why[:NOTE_MAX]

    if run.find_tool(tool) is None:
        return fallback(f"{tool} is not installed")
    with partdev.region_device(source, p.start, p.size) as dev:
        if dev is None:
            return fallback(f"cannot open {where} as a device (needs root)")
        try:
            extents = [] if fstype in fsmap.REPLACES else partclone_map(tool, dev, ignore_check=ignore_check)
            extents += fsmap.extras(fstype or "", dev, p.size)
        except run.CommandError as e:
            words = " ".join(e.stderr.split())[-160:] or f"exit code {e.returncode}"
            return fallback(f"{os.path.basename(e.argv[0])} could not map it: {words}")
        except ValueError as e:
            return fallback(str(e))
        extents += signatures.blocks(dev, p.size)
    return "used", _align_within(extents, p.start, p.size), fsmap.REPLACES.get(fstype or "")


def part_events(parts: Sequence[MapPart]) -> list[dict[str, object]]:
    """The plan event's ``parts``: how each partition is read, and why."""
    return [
        {"number": p.number, "fstype": p.fstype, "method": p.method, "bytes": p.bytes, "note": p.note} for p in parts
    ]
