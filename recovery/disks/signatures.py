"""Filesystem and partition-table signatures of a partition, as libblkid sees them.

A used-mode copy writes only the blocks in the map, so whatever the target
held before survives elsewhere: an old Btrfs superblock under a new swap
area makes ``blkid -p`` ambivalent, and mounting by UUID fails. So:

- the sender records what ``blkid -p`` sees on each source partition (it
  travels in the plan) and adds every block that holds a signature
  (``wipefs --no-act`` lists them all) to the map;
- before writing, the receiver erases every signature it finds in each
  partition-to-be of the target, so what is there afterwards came from the
  source;
- after the copy, ``blkid -p`` on each target partition must see what it saw
  on the source (:mod:`recovery.engine.clone.fscheck`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from recovery import run
from recovery.disks import partdev
from recovery.errors import ToolError

Extent = tuple[int, int]
BLOCK = 4096
MAGIC_SPAN = 16  # bytes from a signature's offset that cover its magic
AMBIVALENT = "AMBIVALENT=1"  # blkid found more than one filesystem
BTRFS_PRIMARY = 64 << 10
BTRFS_MIRRORS = (64 << 20, 256 << 30)  # wipefs names only the primary superblock


BLKID_SECONDS = 60.0  # blkid on a peer's bytes: a probe that takes longer is stopped


def blkid(path: str, offset: int, size: int, *, confine: int | None = None) -> tuple[str, ...]:
    """``KEY=VALUE`` lines ``blkid -p`` prints for [offset, offset+size) of
    ``path``, without those that name the device or its partition entry. ``confine``: the bytes came from
    a peer: run it confined (:func:`recovery.run.confined`) with this much memory, bounded in time and output."""
    argv = [run.need_tool("blkid", "util-linux"), "-p", "-o", "export", "-O", str(offset), "-S", str(size), path]
    if confine is None:
        proc = run.run(argv, check=False)
    else:
        try:
            proc = run.run(run.confined(argv, memory=confine), check=False, timeout=BLKID_SECONDS, keep=64 << 10)
        except ToolError:
            return ()  # it did not finish: it sees nothing it could vouch for
    if proc.returncode == 8:
        return (AMBIVALENT,)
    lines = proc.stdout.decode(errors="replace").splitlines()
    return tuple(sorted(line for line in lines if "=" in line and not line.startswith(("DEVNAME=", "PART_ENTRY_"))))


def describe(values: Sequence[str]) -> str:
    """``TYPE=ext4 UUID=...`` in a line, or what it means when empty/ambivalent."""
    if not values:
        return "no signature"
    if tuple(values) == (AMBIVALENT,):
        return "ambivalent (more than one filesystem signature)"
    keep = [v for v in values if v.split("=", 1)[0] in ("TYPE", "UUID", "LABEL", "PTTYPE")]
    return " ".join(keep or values)


def found(device: str) -> list[tuple[int, str]]:
    """(offset, type) of every signature wipefs finds on ``device``."""
    proc = run.run(["wipefs", "--no-act", "--force", "--json", device], check=False)
    try:
        items = json.loads(proc.stdout or b"{}").get("signatures", [])
    except ValueError:
        return []
    out = []
    for item in items:
        try:
            out.append((int(str(item["offset"]), 0), str(item.get("type") or "")))
        except (KeyError, ValueError):
            continue
    return out


def blocks(device: str, size: int) -> list[Extent]:
    """The aligned blocks holding each signature on ``device`` (and, for Btrfs,
    its superblock mirrors), relative to its start."""
    out: list[Extent] = []
    for offset, kind in found(device):
        spots = [offset]
        if kind == "btrfs" and offset >= BTRFS_PRIMARY:
            spots += [m + offset - BTRFS_PRIMARY for m in BTRFS_MIRRORS]
        for spot in spots:
            start = spot - spot % BLOCK
            end = -(-(spot + MAGIC_SPAN) // BLOCK) * BLOCK
            if end <= size:
                out.append((start, end - start))
    return out


def wipe_regions(path: str, regions: Sequence[Extent], zero: Callable[[int, int], None]) -> list[str]:
    """Erase every signature found in each region of ``path`` with ``zero``
    (absolute offset, length); returns what was erased, for the log."""
    erased = []
    for start, size in regions:
        with partdev.region_device(path, start, size) as dev:
            if dev is None:
                continue
            erased += [f"{kind} at byte {start + off}" for off, kind in found(dev)]
            for off, n in blocks(dev, size):
                zero(start + off, n)
    return erased
