"""Comparing two disks or images chunk by chunk (`recovery verify`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import blake3

from recovery.disks import blockdev, gpt
from recovery.errors import SourceReadError, UsageError


@dataclass
class Comparison:
    source: str
    target: str
    source_size: int
    target_size: int
    compared: int
    source_digest: str  # BLAKE3 of the source, whole (== b3sum)
    target_digest: str  # BLAKE3 of the target's first source_size bytes
    differences: list[tuple[int, int]] = field(default_factory=list)
    gpt_moved: bool = False  # the target's first chunk is the source's but for a GPT moved to its end

    @property
    def matches(self) -> bool:
        """The target holds the source: byte for byte, or but for its GPT's backup moved to its end."""
        return not self.differences and self.target_size >= self.source_size

    @property
    def identical(self) -> bool:
        """Byte for byte."""
        return self.matches and not self.gpt_moved


def _open(path: str) -> tuple[int, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except OSError as e:
        raise SourceReadError(f"cannot open {path}: {e.strerror}") from None
    return fd, blockdev.device_size(fd)


def _read(fd: int, path: str, buf: bytearray, n: int, offset: int) -> memoryview:
    view = memoryview(buf)[:n]
    got, error = blockdev.pread_into(fd, view, offset)
    if error is not None:
        raise SourceReadError(f"cannot read {path} at byte {offset + got}: {error.strerror}")
    if got < n:
        raise SourceReadError(f"{path} ended at byte {offset + got}")
    return view


def compare(source: str, target: str, chunk_size: int = 4 << 20) -> Comparison:
    """Whole BLAKE3 digests of both, and the chunk-aligned ranges where they differ."""
    sfd, ssize = _open(source)
    try:
        tfd, tsize = _open(target)
    except BaseException:
        os.close(sfd)
        raise
    try:
        n_total = min(ssize, tsize)
        whole_s, whole_t = blake3.blake3(), blake3.blake3()
        diffs: list[tuple[int, int]] = []
        gpt_moved = False
        sbuf, tbuf = bytearray(chunk_size), bytearray(chunk_size)
        for off in range(0, n_total, chunk_size):
            n = min(chunk_size, n_total - off)
            whole_s.update(_read(sfd, source, sbuf, n, off))
            whole_t.update(_read(tfd, target, tbuf, n, off))
            # bytearray equality is a memcmp; memoryview equality is not.
            same = sbuf == tbuf if n == chunk_size else sbuf[:n] == tbuf[:n]
            if not same and off == 0 and tsize > ssize and _gpt_moved(sbuf[:n], tbuf[:n], tfd, tsize):
                gpt_moved = same = True
            if not same:
                if diffs and diffs[-1][0] + diffs[-1][1] == off:
                    diffs[-1] = (diffs[-1][0], diffs[-1][1] + n)
                else:
                    diffs.append((off, n))
        if ssize > n_total:  # the source goes on where the target ends
            pos = n_total
            while pos < ssize:
                n = min(chunk_size, ssize - pos)
                whole_s.update(_read(sfd, source, sbuf, n, pos))
                pos += n
        return Comparison(
            os.path.realpath(source),
            os.path.realpath(target),
            ssize,
            tsize,
            n_total,
            whole_s.hexdigest(),
            whole_t.hexdigest(),
            diffs,
            gpt_moved,
        )
    finally:
        os.close(sfd)
        os.close(tfd)


def _gpt_moved(source_head: bytearray, target_head: bytearray, target_fd: int, target_size: int) -> bool:
    """The target's first chunk is the source's but for its GPT moved to the target's end, and the backup
    there is the one that move writes."""
    for ss in (512, 4096):
        moved = gpt.moved_copy(bytes(source_head), bytes(target_head), ss, target_size // ss)
        if moved is None:
            continue
        at = moved.primary.entries_lba * ss
        entries = bytes(source_head[at : at + moved.primary.entries_bytes])
        want = entries.ljust(moved.backup.entries_sectors(ss) * ss, b"\0") + gpt.encode_header(moved.backup, ss)
        return os.pread(target_fd, len(want), moved.backup.entries_lba * ss) == want
    return False
