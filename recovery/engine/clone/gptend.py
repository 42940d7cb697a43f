"""A target larger than its source: after the copy verified, its GPT's backup moved to the disk's end.

The copy holds the source's GPT, whose backup sits at the source's last sector, mid-disk on the
target (and ``sgdisk -v`` reports a problem). The backup's entries and header are written at the
target's end first, then the primary header that names them (and the protective MBR that covers the
disk): a stop between the two leaves the old, intact pair in charge. Every sector written is read
back past the cache. The partition entries are not changed; the new space lies after the last
partition, for a partition to grow into.
"""

from __future__ import annotations

import os

from recovery import events
from recovery.disks import blockdev, gpt
from recovery.engine.clone.target import Target
from recovery.errors import VerificationError


def move_backup_to_end(target: Target, source_size: int, sink: events.EventSink) -> None:
    """Move the copied GPT's backup to ``target``'s end when the target is a larger disk (else nothing)."""
    if not target.is_block or target.size <= source_size:
        return
    ss = blockdev.logical_sector_size(target.fd) or 512
    sectors = target.size // ss
    try:
        primary = gpt.decode_header(os.pread(target.fd, ss, ss))
    except gpt.GptError:
        return  # no GPT (an MBR disk, or none): nothing names a backup
    if primary.alternate_lba == sectors - 1:
        return
    if not 2 <= primary.entries_lba <= (source_size - primary.entries_bytes) // ss:  # a peer wrote it
        sink(events.Warning(f"the GPT on {target.path} was left as the source had it (its entries lie outside it)"))
        return
    entries = os.pread(target.fd, primary.entries_bytes, primary.entries_lba * ss)
    try:
        moved = gpt.moved_to_end(primary, entries, sectors, ss)
        if moved.backup.entries_lba * ss < source_size:  # a target barely larger: never over the copy
            raise gpt.GptError("the disk is too little larger than the source for a backup of its own")
    except gpt.GptError as e:
        sink(events.Warning(f"the GPT on {target.path} was left as the source had it ({e.message})"))
        return
    padded = entries + bytes(moved.backup.entries_sectors(ss) * ss - len(entries))
    writes = [(moved.backup.entries_lba * ss, padded), ((sectors - 1) * ss, gpt.encode_header(moved.backup, ss))]
    _write(target, writes)
    later = [(ss, gpt.encode_header(moved.primary, ss))]
    mbr = gpt.protective_mbr(os.pread(target.fd, ss, 0), sectors)
    if mbr is not None:
        later.append((0, mbr))
    _write(target, later)
    _read_back(target, writes + later)
    end = gpt.partitions_end(primary, entries)
    sink(
        events.TableMoved(
            target=target.path,
            backup_lba=sectors - 1,
            last_usable_lba=moved.primary.last_usable,
            free_bytes=(moved.primary.last_usable - max(end, primary.first_usable - 1)) * ss,
        )
    )


def _write(target: Target, writes: list[tuple[int, bytes]]) -> None:
    for offset, data in writes:
        target.write(data, offset)
    target.flush()


def _read_back(target: Target, writes: list[tuple[int, bytes]]) -> None:
    target.drop_cache()
    for offset, data in writes:
        if os.pread(target.fd, len(data), offset) != data:
            raise VerificationError(
                f"{target.path} does not hold the GPT just written at byte {offset}",
                hint="the target disk may be failing; use another disk",
            )
