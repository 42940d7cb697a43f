"""Partition tables and filesystem signatures, read from user space.

sfdisk reads the table and blkid the signatures straight from the disk or
image, so this works whether or not the kernel made partition nodes (the
appliance's kernel does, some test kernels don't).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass

from recovery import run
from recovery.disks import blockdev

# MBR types of extended-partition containers: their logical partitions are
# listed separately and their EBRs lie between them.
EXTENDED_TYPES = {"5", "f", "85"}
MAX_LOGICAL = 256  # EBRs followed at most (a loop in the chain ends there)
# The GPT header fields the table areas need (UEFI spec, all little-endian).
GPT_HEADER = struct.Struct(
    "<8s"  # signature, b"EFI PART"
    "16x"  # revision, header size, CRC32, reserved
    "Q"  # this header's LBA
    "Q"  # the other (backup) header's LBA
    "Q"  # first usable LBA
    "Q"  # last usable LBA
)


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str
    name: str | None = None
    uuid: str | None = None
    node: str | None = None  # kernel device node, when it exists


@dataclass(frozen=True)
class Table:
    label: str  # "gpt" or "dos"
    sector_size: int
    partitions: tuple[Partition, ...]
    extended: tuple[tuple[int, int], ...] = ()  # MBR extended containers (start, size) in bytes


def read_table(path: str) -> Table | None:
    """The partition table of a disk or image, or None if it has none."""
    proc = run.run(["sfdisk", "--json", path], check=False)
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)["partitiontable"]
    except (ValueError, KeyError):
        return None
    sector = int(data.get("sectorsize", 512))
    parts = []
    extended = []
    for i, p in enumerate(data.get("partitions", []), start=1):
        ptype = str(p.get("type", "")).lower()
        if data.get("label") == "dos" and ptype in EXTENDED_TYPES:
            extended.append((int(p["start"]) * sector, int(p["size"]) * sector))
            continue
        node = p.get("node", "")
        number = number_from_node(node) or i
        parts.append(
            Partition(
                number=number,
                start=int(p["start"]) * sector,
                size=int(p["size"]) * sector,
                type=ptype,
                name=p.get("name"),
                uuid=p.get("uuid"),
                node=node if node.startswith("/dev/") and os.path.exists(node) else None,
            )
        )
    return Table(str(data.get("label", "")), sector, tuple(parts), tuple(extended))


def table_areas(path: str, table: Table, size: int) -> list[tuple[int, int]]:
    """Where a disk's partition tables and boot code live, as (offset, length):
    everything before the first partition (MBR, GPT, boot loaders), the
    backup GPT, and every EBR of the logical partitions."""
    starts = [p.start for p in table.partitions] + [s for s, _ in table.extended]
    out = [(0, min(starts) if starts else min(size, 1 << 20))]
    ss = table.sector_size
    with open(path, "rb") as f:
        if table.label == "gpt":
            f.seek(ss)
            raw = f.read(GPT_HEADER.size)
            if len(raw) == GPT_HEADER.size:
                magic, _this, backup, _first, last = GPT_HEADER.unpack(raw)
                if magic == b"EFI PART" and last < backup and (backup + 1) * ss <= size:
                    out.append(((last + 1) * ss, (backup - last) * ss))  # backup entries + header
                else:
                    out.append((max(0, size - (33 * ss)), min(size, 33 * ss)))
        for ext_start, _ in table.extended:
            out.extend(_ebr_chain(f, ext_start, ss))
    return out


def _ebr_chain(f: object, ext_start: int, ss: int) -> list[tuple[int, int]]:
    """The sectors holding the extended boot records of an MBR's logical partitions."""
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    ebr = ext_start
    while ebr not in seen and len(seen) < MAX_LOGICAL:
        seen.add(ebr)
        out.append((ebr, ss))
        f.seek(ebr)  # type: ignore[attr-defined]
        sector = f.read(512)  # type: ignore[attr-defined]
        if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
            break
        link = sector[446 + 16 : 446 + 32]  # the second entry points at the next EBR
        if link[4] not in (0x05, 0x0F, 0x85):
            break
        (rel,) = struct.unpack_from("<I", link, 8)
        ebr = ext_start + rel * ss
    return out


def number_from_node(node: str) -> int | None:
    digits = ""
    for ch in reversed(node):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else None


@dataclass(frozen=True)
class Signature:
    fstype: str | None  # ext4, vfat, xfs, ... (blkid TYPE)
    label: str | None
    uuid: str | None
    ptable: str | None  # PTTYPE when the area holds a partition table
    unreadable: int = 0  # sectors blkid looks at that could not be read (it was shown them as zeros)

    @property
    def damage(self) -> str | None:
        """What a note says of a filesystem found around unreadable sectors, or None."""
        if not self.unreadable or not self.fstype:
            return None
        return f"{self.fstype} with damaged metadata ({self.unreadable} sector(s) unreadable where blkid looks)"


def probe(path: str, offset: int = 0, size: int | None = None, *, around_errors: bool = False) -> Signature:
    """What blkid finds at ``offset`` of ``path`` (a whole device, a file). blkid gives up at a read
    error: with ``around_errors`` (a failing source), when it gave up so (its low-level probing debug
    says), it is shown the areas it looks at as far as they can be read (the rest zeros)."""
    argv = ["blkid", "-p", "-o", "udev"]
    if offset:
        argv += ["-O", str(offset)]
    if size is not None:
        argv += ["-S", str(size)]
    env = {"LIBBLKID_DEBUG": "lowprobe"} if around_errors else None
    proc = run.run([*argv, path], check=False, env=env)
    found = _signature(proc.stdout)
    if around_errors and size is not None and found.fstype is None and BLKID_READ_FAILED in proc.stderr:
        return _probe_around_errors(path, offset, size) or found
    return found


BLKID_READ_FAILED = b"read failed: "  # libblkid's lowprobe debug line when a read of the device fails


PROBED = 2 << 20  # bytes at the start and the end of an area that a probe around read errors shows blkid


def _probe_around_errors(path: str, offset: int, size: int) -> Signature | None:
    """blkid's verdict on the start and end of [offset, offset+size) read sector by sector where they fail,
    in a sparse copy; None if nothing in them failed to read (blkid's "nothing there" stands)."""
    head = min(size, PROBED) // 512 * 512
    tail_at = max(head, (size - PROBED) // 512 * 512)
    try:
        first, bad = blockdev.read_sparing(path, offset, head)
        last, bad_end = blockdev.read_sparing(path, offset + tail_at, (size - tail_at) // 512 * 512)
    except OSError:
        return None
    if not bad + bad_end:
        return None
    with tempfile.NamedTemporaryFile(prefix="probe-") as f:
        f.truncate(size)
        os.pwrite(f.fileno(), first, 0)
        os.pwrite(f.fileno(), last, tail_at)
        proc = run.run(["blkid", "-p", "-o", "udev", f.name], check=False)
    return dataclasses.replace(_signature(proc.stdout), unreadable=bad + bad_end)


def _signature(udev: bytes) -> Signature:
    """A Signature from ``blkid -o udev``'s lines: the label and UUID from their ``_ENC`` forms, where every
    byte a shell or udev would mind is ``\\xNN`` (``-o export`` writes bytes over 127 as ``M-x``, a label
    that could not be given back to mkfs)."""
    values: dict[str, str] = {}
    for line in udev.splitlines():
        key, sep, value = line.partition(b"=")
        if sep:
            raw = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), value)
            values[key.decode(errors="replace")] = raw.decode(errors="replace")
    return Signature(
        fstype=values.get("ID_FS_TYPE"),
        label=values.get("ID_FS_LABEL_ENC", values.get("ID_FS_LABEL")),
        uuid=values.get("ID_FS_UUID_ENC", values.get("ID_FS_UUID")),
        ptable=values.get("ID_PART_TABLE_TYPE"),
    )


def has_signatures(path: str) -> str | None:
    """A short description of what is on a disk ("gpt partition table", "ext4"), or None."""
    proc = run.run(["wipefs", "--no-act", "--json", path], check=False)
    try:
        found = json.loads(proc.stdout or b"{}").get("signatures", [])
    except ValueError:
        found = []
    kinds = sorted({str(s.get("type")) for s in found if s.get("type")})
    if kinds:
        return ", ".join(kinds)
    table = read_table(path)
    return f"{table.label} partition table" if table else None
