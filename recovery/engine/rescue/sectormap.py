"""A map of the source's areas by rescue status, in GNU ddrescue's mapfile format.

The format, so that ``ddrescuelog`` and ``ddrescueview`` read what we write
and ddrescue itself can continue a rescue from it:

- comment lines start with ``#`` (we write a heading: who made it, the
  command, the start and current time, the phase);
- the first other line is the *status line*: ``current_pos current_status
  current_pass``, the position in hex, one status character (``?`` copying,
  ``*`` trimming, ``/`` scraping, ``-`` retrying, ``+`` finished), the pass;
- then one line per block, ``pos size status``, in hex, sorted, adjacent,
  with the block statuses ``?`` non-tried, ``*`` non-trimmed (a large read
  failed somewhere in it), ``/`` non-scraped (trimmed: its edges were read
  sector by sector), ``-`` bad sector(s), ``+`` finished (rescued).

:class:`SectorMap` holds the blocks in a sorted list, merging neighbours of
one status. Updates mostly come in ascending order, at the end of the list,
which costs O(log n).
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import UsageError

NON_TRIED, NON_TRIMMED, NON_SCRAPED, BAD, FINISHED = "?", "*", "/", "-", "+"
STATUSES = (NON_TRIED, NON_TRIMMED, NON_SCRAPED, BAD, FINISHED)
PHASES = {  # current_status -> the heading line
    "?": "Copying the good areas",
    "*": "Trimming the failed blocks",
    "/": "Scraping the failed blocks",
    "-": "Retrying the bad sectors",
    "+": "Finished",
}


MAX_MAPFILE = 64 << 20  # bytes of a mapfile read at most (a mapfile of millions of areas)


class MapFormatError(ValueError):
    """A mapfile that is not in ddrescue's format, or not of this source."""


class MapWriteError(UsageError):
    """The mapfile could not be written where it was asked for."""


@dataclass
class MapStatus:
    """The status line."""

    pos: int = 0
    status: str = NON_TRIED
    pass_: int = 1


class SectorMap:
    """Blocks ``(pos, size, status)`` covering ``[0, size)``."""

    def __init__(self, size: int, status: str = NON_TRIED) -> None:
        self.size = size
        self.starts: list[int] = [0] if size else []
        self.stats: list[str] = [status] if size else []

    def copy(self) -> SectorMap:
        other = SectorMap(0)
        other.size, other.starts, other.stats = self.size, list(self.starts), list(self.stats)
        return other

    def _end(self, i: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else self.size

    def blocks(self, pos: int = 0, end: int | None = None) -> Iterator[tuple[int, int, str]]:
        """``(pos, size, status)`` of the blocks, clipped to ``[pos, end)``."""
        end = self.size if end is None else min(end, self.size)
        if pos >= end:
            return
        i = bisect.bisect_right(self.starts, pos) - 1
        while i < len(self.starts) and self.starts[i] < end:
            a, b = max(pos, self.starts[i]), min(end, self._end(i))
            if a < b:
                yield a, b - a, self.stats[i]
            i += 1

    def status_at(self, pos: int) -> str:
        return self.stats[bisect.bisect_right(self.starts, pos) - 1]

    def _split(self, pos: int) -> int:
        """Make ``pos`` a block start (0 < pos < size); its index."""
        i = bisect.bisect_right(self.starts, pos) - 1
        if self.starts[i] == pos:
            return i
        self.starts.insert(i + 1, pos)
        self.stats.insert(i + 1, self.stats[i])
        return i + 1

    def set(self, pos: int, size: int, status: str) -> None:
        """Give ``[pos, pos+size)`` one status."""
        end = min(pos + size, self.size)
        if pos >= end:
            return
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        i = self._split(pos)
        j = self._split(end) if end < self.size else len(self.starts)
        del self.starts[i + 1 : j]
        del self.stats[i + 1 : j]
        self.stats[i] = status
        # merge with the neighbours of the same status
        if i + 1 < len(self.starts) and self.stats[i + 1] == status:
            del self.starts[i + 1]
            del self.stats[i + 1]
        if i > 0 and self.stats[i - 1] == status:
            del self.starts[i]
            del self.stats[i]

    def total(self, statuses: str, extents: Iterable[tuple[int, int]] | None = None) -> int:
        """Bytes with one of ``statuses`` (within ``extents``, if given)."""
        return sum(n for _, n, s in self._within(extents) if s in statuses)

    def ranges(self, statuses: str, extents: Iterable[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
        """The ``(pos, size)`` ranges with one of ``statuses``, adjacent ones joined."""
        out: list[tuple[int, int]] = []
        for pos, n, s in self._within(extents):
            if s not in statuses:
                continue
            if out and out[-1][0] + out[-1][1] == pos:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((pos, n))
        return out

    def _within(self, extents: Iterable[tuple[int, int]] | None) -> Iterator[tuple[int, int, str]]:
        if extents is None:
            yield from self.blocks()
            return
        for off, n in extents:
            yield from self.blocks(off, off + n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SectorMap) and (self.size, self.starts, self.stats) == (
            other.size,
            other.starts,
            other.stats,
        )

    __hash__ = None  # type: ignore[assignment]


# --- the file format -------------------------------------------------------


def format_mapfile(smap: SectorMap, status: MapStatus, heading: Iterable[str] = ()) -> str:
    """The mapfile's text: heading comments, the status line, one line per block."""
    lines = [f"# {line}" for line in heading]
    lines.append(f"# {PHASES.get(status.status, 'Finished')}")
    lines.append("# current_pos  current_status  current_pass")
    lines.append(f"0x{status.pos:08X}     {status.status}               {status.pass_}")
    lines.append("#      pos        size  status")
    lines += [f"0x{pos:08X}  0x{size:08X}  {s}" for pos, size, s in smap.blocks()]
    return "\n".join(lines) + "\n"


def _number(text: str, where: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise MapFormatError(f"{where}: not a number where one belongs") from None  # its words are not echoed


def parse_mapfile(text: str, size: int | None = None) -> tuple[SectorMap, MapStatus]:
    """A mapfile's blocks and status line; ``size``: the source's (blocks must cover it exactly)."""
    status: MapStatus | None = None
    blocks: list[tuple[int, int, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        where = f"line {n}"
        if status is None:
            if len(words) not in (2, 3) or len(words[1]) != 1:
                raise MapFormatError(f"{where}: not a status line (current_pos current_status [current_pass])")
            status = MapStatus(_number(words[0], where), words[1], _number(words[2], where) if len(words) == 3 else 1)
            continue
        if len(words) != 3 or words[2] not in STATUSES:
            raise MapFormatError(f"{where}: not a block line (pos size status)")
        pos, length = _number(words[0], where), _number(words[1], where)
        expected = blocks[-1][0] + blocks[-1][1] if blocks else 0
        if pos != expected or length <= 0:
            raise MapFormatError(f"{where}: block at {pos:#x} does not follow the previous one (at {expected:#x})")
        blocks.append((pos, length, words[2]))
    if status is None:
        raise MapFormatError("no status line: not a ddrescue mapfile")
    extent = blocks[-1][0] + blocks[-1][1] if blocks else 0
    if size is not None and extent != size:
        raise MapFormatError(f"the mapfile covers {extent} bytes, the source has {size}")
    smap = SectorMap(extent)
    for pos, length, s in blocks:
        smap.set(pos, length, s)
    return smap, status


def write_mapfile(path: Path, smap: SectorMap, status: MapStatus, heading: Iterable[str] = ()) -> None:
    """Replace ``path`` atomically (a reader never sees half a mapfile), and make it durable. The new
    text goes to a file of a name nobody could guess, made here (0600), then renamed over ``path``:
    a symbolic link planted at ``path`` or beside it is replaced, never followed."""
    text = format_mapfile(smap, status, heading)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise MapWriteError(
            f"cannot write the mapfile {path}: {e.strerror}",
            hint="give --mapfile a path on a disk this machine can write",
        ) from None


def read_mapfile(path: Path, size: int) -> tuple[SectorMap, MapStatus]:
    """The mapfile at ``path``: a regular file, not read through a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise MapFormatError(f"cannot read {path}: {why}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise MapFormatError(f"cannot read {path}: not a regular file")
        text = f.read(MAX_MAPFILE + 1).decode("utf-8", errors="replace")
    if len(text) > MAX_MAPFILE:
        raise MapFormatError(f"{path} is larger than a mapfile of this source can be")
    return parse_mapfile(text, size)


def heading(command: str, started: float) -> list[str]:
    return [
        "Mapfile. Created by usb4-recovery (GNU ddrescue's mapfile format)",
        f"Command line: {command}",
        f"Start time:   {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}",
        f"Current time: {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
