"""Partition tables and filesystem signatures, read from user space.

sfdisk reads the table and blkid the signatures straight from the disk or
image, so this works whether or not the kernel made partition nodes (the
appliance's kernel does, some test kernels don't).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from recovery import run

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
        number = _number_from_node(node) or i
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


def _number_from_node(node: str) -> int | None:
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


def probe(path: str, offset: int = 0, size: int | None = None) -> Signature:
    """What blkid finds at ``offset`` of ``path`` (a whole device, a file)."""
    argv = ["blkid", "-p", "-o", "export"]
    if offset:
        argv += ["-O", str(offset)]
    if size is not None:
        argv += ["-S", str(size)]
    proc = run.run([*argv, path], check=False)
    values: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return Signature(
        fstype=values.get("TYPE"),
        label=values.get("LABEL"),
        uuid=values.get("UUID"),
        ptable=values.get("PTTYPE"),
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
