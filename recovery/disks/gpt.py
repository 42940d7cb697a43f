"""GPT headers, pure: decode and check one, encode one, and the pair that puts the backup at a disk's end.

A disk cloned onto a larger one keeps its source's GPT: the primary header names a backup header at
the source's last sector, mid-disk on the target, and the space after it is outside the table. The
UEFI specification wants the backup header on the disk's last sector and its entries right before
it; :func:`moved_to_end` gives the two headers that say so (the partition entries themselves are
not changed). Every field comes from a disk a peer wrote: sizes are bounded and CRCs checked before
anything is trusted.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass

from recovery.errors import RecoveryError

SIGNATURE = b"EFI PART"
MIN_HEADER = 92  # bytes the UEFI specification defines; the rest of the sector is reserved (zeros)
MAX_ENTRIES_BYTES = 1 << 20  # entry arrays larger than this are refused (the usual one is 16 KiB)
_FIELDS = struct.Struct("<8sIIIIQQQQ16sQIII")


class GptError(RecoveryError):
    """A GPT header or entry array that cannot be trusted (the table is then left as it is)."""


@dataclass(frozen=True)
class Header:
    revision: int
    header_size: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int

    @property
    def entries_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def entries_sectors(self, sector_size: int) -> int:
        return -(-self.entries_bytes // sector_size)


def decode_header(sector: bytes) -> Header:
    """The header in ``sector`` (one logical sector), its CRC and sizes checked."""
    if len(sector) < MIN_HEADER or sector[:8] != SIGNATURE:
        raise GptError("no GPT header here")
    fields = _FIELDS.unpack_from(sector)
    _, revision, header_size, crc, _, my_lba, alternate, first, last, guid, entries_lba, count, size, ecrc = fields
    if not MIN_HEADER <= header_size <= len(sector):
        raise GptError(f"the GPT header says it is {header_size} bytes long")
    if zlib.crc32(sector[:16] + bytes(4) + sector[20:header_size]) != crc:
        raise GptError("the GPT header's CRC does not match")
    if size < 128 or size % 8 or count * size > MAX_ENTRIES_BYTES:
        raise GptError(f"the GPT's entry array ({count} entries of {size} bytes) is not one this tool takes")
    if not first <= last:
        raise GptError("the GPT's usable area ends before it starts")
    return Header(revision, header_size, my_lba, alternate, first, last, guid, entries_lba, count, size, ecrc)


def encode_header(header: Header, sector_size: int) -> bytes:
    """One logical sector holding ``header``, its CRC computed, the reserved rest zeros."""
    body = bytearray(sector_size)
    _FIELDS.pack_into(
        body,
        0,
        SIGNATURE,
        header.revision,
        header.header_size,
        0,
        0,
        header.my_lba,
        header.alternate_lba,
        header.first_usable,
        header.last_usable,
        header.disk_guid,
        header.entries_lba,
        header.entry_count,
        header.entry_size,
        header.entries_crc,
    )
    struct.pack_into("<I", body, 16, zlib.crc32(bytes(body[: header.header_size])))
    return bytes(body)


def check_entries(header: Header, entries: bytes) -> None:
    """The entry array read from where ``header`` says gives the CRC it says."""
    if len(entries) < header.entries_bytes or zlib.crc32(entries[: header.entries_bytes]) != header.entries_crc:
        raise GptError("the GPT's partition entries do not match their CRC")


def partitions_end(header: Header, entries: bytes) -> int:
    """The last LBA any partition uses (0: none)."""
    last = 0
    for i in range(header.entry_count):
        entry = entries[i * header.entry_size : (i + 1) * header.entry_size]
        if entry[:16] != bytes(16):  # an unused entry has a zero type GUID
            last = max(last, int.from_bytes(entry[40:48], "little"))
    return last


@dataclass(frozen=True)
class Moved:
    """A GPT with its backup on its disk's last sector: the two headers."""

    primary: Header
    backup: Header


def moved_to_end(primary: Header, entries: bytes, disk_sectors: int, sector_size: int) -> Moved:
    """The primary header naming a backup on the disk's last sector, with its usable area grown to the
    backup's entries, and that backup header. ``entries``: the primary's array, checked."""
    check_entries(primary, entries)
    if primary.my_lba != 1:
        raise GptError("the primary GPT header is not at LBA 1")
    if not primary.entry_count:
        raise GptError("the GPT has no partition entries")
    backup_lba = disk_sectors - 1
    backup_entries = backup_lba - primary.entries_sectors(sector_size)
    last_usable = backup_entries - 1
    if last_usable < primary.last_usable or last_usable < partitions_end(primary, entries):
        raise GptError("the disk is too small for this GPT with its backup at the end")
    new_primary = dataclasses.replace(primary, alternate_lba=backup_lba, last_usable=last_usable)
    backup = dataclasses.replace(new_primary, my_lba=backup_lba, alternate_lba=1, entries_lba=backup_entries)
    return Moved(new_primary, backup)


def protective_mbr(mbr: bytes, disk_sectors: int) -> bytes | None:
    """A protective MBR (its one partition of type 0xEE from LBA 1) covering a disk of ``disk_sectors``
    sectors, as the specification wants; None when ``mbr`` is no such MBR (a hybrid one stays as it is)
    or already covers it."""
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        return None
    slots = [mbr[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    used = [i for i, s in enumerate(slots) if s[4] != 0]
    if len(used) != 1 or slots[used[0]][4] != 0xEE or int.from_bytes(slots[used[0]][8:12], "little") != 1:
        return None
    size = min(disk_sectors - 1, 0xFFFFFFFF)
    at = 446 + 16 * used[0] + 12
    if int.from_bytes(mbr[at : at + 4], "little") == size:
        return None
    return mbr[:at] + size.to_bytes(4, "little") + mbr[at + 4 :]


def moved_copy(source_head: bytes, target_head: bytes, sector_size: int, disk_sectors: int) -> Moved | None:
    """The GPT moved to the end of a disk of ``disk_sectors`` sectors, when ``target_head`` (its first
    bytes) is ``source_head`` (the source's, as long) with exactly what :func:`moved_to_end` changes
    there: the primary header, and the protective MBR's size. None otherwise. The caller checks the
    backup it names at the disk's end."""
    ss = sector_size
    if len(source_head) != len(target_head) or len(source_head) < 2 * ss:
        return None
    try:
        was = decode_header(source_head[ss : 2 * ss])
        at = was.entries_lba * ss
        if at + was.entries_bytes > len(source_head):
            return None
        moved = moved_to_end(was, source_head[at : at + was.entries_bytes], disk_sectors, ss)
    except GptError:
        return None
    if target_head[ss : 2 * ss] != encode_header(moved.primary, ss):
        return None
    mbr = source_head[:ss]
    if target_head[:ss] not in (mbr, protective_mbr(mbr, disk_sectors)):
        return None
    return moved if source_head[2 * ss :] == target_head[2 * ss :] else None
