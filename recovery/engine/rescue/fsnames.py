"""Which files the unreadable areas of a rescued source hit: the question every user asks.

Each unreadable range is placed in its partition and handed to the tool
that knows the filesystem's layout, read-only, on a device holding exactly
that partition (:mod:`recovery.disks.partdev`):

- ext2/3/4: ``debugfs -c`` ``icheck`` (blocks to inodes), then ``ncheck``
  (inodes to paths); a block in no inode is free space or filesystem
  metadata, as the block bitmap (``testb``) says;
- NTFS: ``ntfscluster -s`` (sectors to the files whose data lies there);
- XFS: ``xfs_db -r`` ``blockget -n``, ``blockuse -n`` (blocks to inodes and
  paths);
- Btrfs is not resolved: ``btrfs inspect-internal logical-resolve`` needs
  the filesystem mounted and a logical address, and a failing source should
  not be mounted for this; the entry says so.

Whatever cannot be told (another filesystem, a tool that is missing or fails
because the metadata it needs is itself unreadable) is said in the entry's
``note``; it never fails the clone.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from recovery import events, run
from recovery.disks import partdev
from recovery.errors import RecoveryError
from recovery.protocol.messages import FilesHit, MapPart
from recovery.protocol.values import FILES_HIT_ENTRIES, FILES_HIT_NAMES

MAX_BLOCKS = 4096  # filesystem blocks looked up per partition (a larger bad area is sampled)
MAX_FILES = 200  # named per partition
NAME_SENT = 512  # characters of a file's name the peer is told (the end of a longer path)
SPECIAL_INODES = {
    1: "(bad blocks list)",
    5: "(boot loader inode)",
    7: "(reserved group descriptors)",
    8: "(the journal)",
}

Resolver = Callable[[str, list[tuple[int, int]]], tuple[list[str], str]]
MEMORY_SHARE = 4  # a confined tool may use at most 1/MEMORY_SHARE of this machine's RAM

# Whether the tools run confined (run.confined): for a filesystem a peer wrote, such as an image's.
_confined: ContextVar[bool] = ContextVar("confined", default=False)


def _run(argv: list[str], *, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """A filesystem tool reading the device at the end of ``argv``, run to its end (confined when the
    filesystem came from elsewhere)."""
    if _confined.get():
        argv = run.confined([run.need_tool(argv[0]), *argv[1:]], memory=run.ram_share(MEMORY_SHARE))
    return run.run(argv, timeout=timeout, input=stdin)


def _output(argv: list[str], *, timeout: float, stdin: bytes | None = None) -> str:
    """What such a tool printed."""
    return _run(argv, timeout=timeout, stdin=stdin).stdout.decode(errors="replace")


def _within(ranges: Sequence[tuple[int, int]], start: int, size: int) -> list[tuple[int, int]]:
    """Parts of ``ranges`` inside [start, start+size), relative to ``start``."""
    out = []
    for off, n in ranges:
        a, b = max(off, start), min(off + n, start + size)
        if a < b:
            out.append((a - start, b - a))
    return out


def _units(ranges: Sequence[tuple[int, int]], unit: int) -> list[int]:
    """The ``unit``-sized block numbers the ranges touch, at most :data:`MAX_BLOCKS` (evenly sampled,
    without listing them all first: a damaged area may be terabytes long)."""
    spans = [range(off // unit, (off + n - 1) // unit + 1) for off, n in ranges if n > 0]
    total = sum(len(r) for r in spans)
    if total <= MAX_BLOCKS:
        return [b for r in spans for b in r]
    step = total / MAX_BLOCKS
    picks = [int(i * step) for i in range(MAX_BLOCKS)]  # positions in the concatenation of the spans
    blocks: list[int] = []
    base = 0
    k = 0
    for r in spans:
        while k < len(picks) and picks[k] < base + len(r):
            blocks.append(r[picks[k] - base])
            k += 1
        base += len(r)
    return blocks


def _ext(dev: str, ranges: list[tuple[int, int]]) -> tuple[list[str], str]:
    stats = _output(["debugfs", "-c", "-D", "-R", "stats", dev], timeout=120)
    found = re.search(r"^Block size:\s+(\d+)", stats, re.M)
    if not found:
        return [], "debugfs did not say the block size"
    blocks = _units(ranges, int(found.group(1)))
    proc = _run(["debugfs", "-c", "-D", "-R", "icheck " + " ".join(map(str, blocks)), dev], timeout=300)
    text = proc.stdout.decode(errors="replace")
    if not text.strip():  # it gave up (it says why on stderr, with an exit code of 0)
        why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no answer"]
        return [], f"debugfs could not tell which files: {why[0]}"[:300]
    inodes: list[int] = []
    loose: list[int] = []  # blocks in no inode
    for line in text.splitlines()[1:]:
        words = line.split("\t")
        if len(words) == 2 and words[1].strip().isdigit():
            inodes.append(int(words[1]))
        elif len(words) == 2 and words[0].strip().isdigit():
            loose.append(int(words[0]))
    names = [SPECIAL_INODES[i] for i in dict.fromkeys(inodes) if i in SPECIAL_INODES]
    wanted = [i for i in dict.fromkeys(inodes) if i not in SPECIAL_INODES]
    if wanted:
        text = _output(
            ["debugfs", "-c", "-D", "-R", "ncheck -c " + " ".join(map(str, wanted[:MAX_FILES])), dev], timeout=300
        )
        named: dict[int, str] = {}
        for line in text.splitlines()[1:]:
            words = line.split("\t", 1)
            if len(words) == 2 and words[0].strip().isdigit():
                named.setdefault(int(words[0]), "/" + words[1].strip().lstrip("/"))
        names += [named.get(i, f"(inode {i}, no name found)") for i in wanted]
    return names, _loose_note(dev, loose)


def _loose_note(dev: str, loose: list[int]) -> str:
    """What the blocks in no file are: free space (no file lost) or filesystem metadata, by the block
    bitmap (which ``debugfs -c`` does not load: read here without it, and it may be unreadable too)."""
    if not loose:
        return ""
    commands = "".join(f"testb {b}\n" for b in loose).encode()
    try:
        text = _output(["debugfs", "-D", "-f", "-", dev], stdin=commands, timeout=300)
    except RecoveryError:
        return f"{len(loose)} block(s) in no file: filesystem metadata or free space (its bitmap is unreadable)"
    free = len(re.findall(r"^Block \d+ not in use", text, re.M))
    said = [f"{free} block(s) in free space (no file lost)"] if free else []
    if len(loose) > free:
        said.append(f"{len(loose) - free} block(s) in no file: filesystem metadata")
    return "; ".join(said)


def _ntfs(dev: str, ranges: list[tuple[int, int]]) -> tuple[list[str], str]:
    names: list[str] = []
    for off, n in ranges[:64]:
        text = _output(["ntfscluster", "-f", "-s", f"{off // 512}-{(off + n - 1) // 512}", dev], timeout=300)
        for line in text.splitlines():
            found = re.match(r"Inode \d+ (.+)$", line.strip())
            if found:
                names.append(found.group(1).removesuffix("/$DATA"))
    return list(dict.fromkeys(names)), ""


def _xfs(dev: str, ranges: list[tuple[int, int]]) -> tuple[list[str], str]:
    daddrs = _units(ranges, 512)[:256]
    converted = _output(
        ["xfs_db", "-r", *[a for d in daddrs for a in ("-c", f"convert daddr {d} fsblock")], dev], timeout=300
    )
    fsblocks = list(dict.fromkeys(int(m) for m in re.findall(r"\((\d+)\)", converted)))
    argv = ["xfs_db", "-r", "-c", "blockget -n"]
    for b in fsblocks:
        argv += ["-c", f"fsblock {b}", "-c", "blockuse -n"]
    text = _output([*argv, dev], timeout=600)
    names = [m.group(1) for m in re.finditer(r"inode \d+ (\S.*)$", text, re.M)]
    return list(dict.fromkeys("/" + n.lstrip("/") for n in names)), ""


RESOLVERS: dict[str, Resolver] = {"ext2": _ext, "ext3": _ext, "ext4": _ext, "ntfs": _ntfs, "xfs": _xfs}
UNRESOLVED = {
    "btrfs": "not resolved: btrfs inspect-internal needs the filesystem mounted, "
    "and a failing source should not be mounted for this"
}


def files_hit(
    source: str,
    parts: Sequence[MapPart],
    bad: Sequence[tuple[int, int]],
    sink: events.EventSink = events.ignore,
    *,
    confine: bool = False,
) -> list[dict[str, Any]]:
    """One entry per partition (or area outside them) that the unreadable ranges touch. ``confine``: the
    filesystems came from elsewhere (an image): each tool runs confined, on a device lent to it."""
    token = _confined.set(confine)
    try:
        return _files_hit(source, parts, bad, sink, confine)
    finally:
        _confined.reset(token)


def _files_hit(
    source: str, parts: Sequence[MapPart], bad: Sequence[tuple[int, int]], sink: events.EventSink, confine: bool
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    inside: list[tuple[int, int]] = []
    if bad:
        sink(events.Phase("rescue", "finding which files the unreadable areas hit"))
    for part in parts:
        rel = _within(bad, part.start, part.size)
        if not rel:
            continue
        inside += [(part.start + o, n) for o, n in rel]
        entry: dict[str, Any] = {
            "partition": part.number,
            "fstype": part.fstype,
            "bytes": sum(n for _, n in rel),
            "files": [],
            "more": 0,
            "note": "",
        }
        resolver = RESOLVERS.get(part.fstype or "")
        if resolver is None:
            entry["note"] = UNRESOLVED.get(part.fstype or "", f"not resolved for {part.fstype or 'this partition'}")
        else:
            try:
                region = (
                    partdev.private_region(source, part.start, part.size)
                    if confine
                    else partdev.region_device(source, part.start, part.size, direct=True)
                )
                with region as dev:
                    if dev is None:
                        entry["note"] = "no device for the partition could be made (not root?)"
                    else:
                        files, note = resolver(dev, rel)
                        entry["files"], entry["note"] = files[:MAX_FILES], note
            except (RecoveryError, OSError) as e:
                entry["note"] = f"could not tell: {e}"[:300]
        out.append(entry)
    outside = sum(n for _, n in bad) - sum(n for _, n in inside)
    if outside > 0:
        out.append(
            {
                "partition": 0,
                "fstype": None,
                "bytes": outside,
                "files": [],
                "more": 0,
                "note": "outside the partitions: the partition table or boot code"
                if parts
                else "the source has no partitions the clone knows of",
            }
        )
    return out


def to_wire(hits: Sequence[dict[str, Any]]) -> tuple[FilesHit, ...]:
    """The entries of :func:`files_hit` as a ``done`` carries them to the receiver, within its bounds."""
    return tuple(
        FilesHit(
            partition=hit["partition"],
            fstype=hit["fstype"],
            bytes=hit["bytes"],
            files=tuple(_tail(name) for name in hit["files"][:FILES_HIT_NAMES]),
            more=max(0, len(hit["files"]) - FILES_HIT_NAMES) + hit["more"],
            note=hit["note"][:1024],
        )
        for hit in hits[:FILES_HIT_ENTRIES]
    )


def from_wire(hits: Sequence[FilesHit]) -> list[dict[str, Any]]:
    """What the sender said the unreadable areas hit, as this side's summary lists it."""
    return [
        {
            "partition": h.partition,
            "fstype": h.fstype,
            "bytes": h.bytes,
            "files": list(h.files),
            "more": h.more,
            "note": h.note,
        }
        for h in hits
    ]


def _tail(name: str) -> str:
    return name if len(name) <= NAME_SENT else "..." + name[-(NAME_SENT - 3) :]
