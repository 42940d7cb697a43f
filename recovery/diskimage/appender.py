"""Appending to a file past the page cache: bytes gathered in an aligned buffer, written in whole blocks.

An image is written front to back, so its writer only ever appends. Through the page cache every
byte would be copied into the cache and written back later (on a small machine the larger part of a
save's time); with an ``O_DIRECT`` descriptor the gathered blocks go to the disk as they are. A flush
writes the partial last block padded with zeros, so the file may end in zeros after the last record
until the next append writes that block again (a resume's scan stops at them; the finished image is
cut to its end). Without a direct descriptor (a filesystem that refuses one) the same appends go
through the cache.
"""

from __future__ import annotations

import errno
import mmap
import os

from recovery.disks.blockdev import Filled, check_written, pwrite_from
from recovery.errors import TargetWriteError

BLOCK = 4096  # O_DIRECT's alignment for offsets, lengths and memory, on 512-byte and 4Kn disks alike
STAGE = 8 << 20  # bytes gathered before they are written


class Appender:
    """Appends to ``fd`` (the file ``path``) from byte ``at`` on; ``direct_fd``: an O_DIRECT twin."""

    def __init__(self, fd: int, path: str, at: int, direct_fd: int | None = None) -> None:
        self.fd, self.path, self.direct_fd = fd, path, direct_fd
        self.stage = mmap.mmap(-1, STAGE)  # page-aligned, as O_DIRECT wants its memory
        self.base = at - at % BLOCK if direct_fd is not None else at  # the file offset of stage[0]
        self.fill = 0
        if at > self.base:  # the start of the block ``at`` falls in: kept, to write that block whole
            head = os.pread(fd, at - self.base, self.base)
            if len(head) != at - self.base:
                raise TargetWriteError(f"cannot read {self.path} back at byte {self.base}")
            self.stage[: len(head)] = head
            self.fill = len(head)

    @property
    def end(self) -> int:
        """Where the next append goes."""
        return self.base + self.fill

    def append(self, data: bytes | bytearray | memoryview) -> None:
        src = memoryview(data).cast("B")
        done = 0
        while done < len(src):
            n = min(len(src) - done, STAGE - self.fill)
            self.stage[self.fill : self.fill + n] = src[done : done + n]
            self.fill += n
            done += n
            if self.fill == STAGE:
                self._write_whole_blocks()

    def flush(self) -> None:
        """Everything appended so far on the disk (fsync included)."""
        partial = self.fill % BLOCK if self.direct_fd is not None else 0
        if partial:
            pad = BLOCK - partial
            self.stage[self.fill : self.fill + pad] = bytes(pad)
            self._write(self.fill + pad)
            self._keep_tail(self.fill - partial)  # the partial block stays, to be written whole again
        else:
            self._write_whole_blocks()
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise TargetWriteError(f"cannot flush {self.path}: {e.strerror}") from None

    def close(self) -> None:
        self.stage.close()

    def _write_whole_blocks(self) -> None:
        """Write what fills whole blocks and keep the rest (less than a block) for the next write."""
        whole = self.fill - self.fill % BLOCK if self.direct_fd is not None else self.fill
        if not whole:
            return
        self._write(whole)
        self._keep_tail(whole)

    def _keep_tail(self, written: int) -> None:
        """The first ``written`` bytes are on the disk: keep only what follows them."""
        self.stage.move(0, written, self.fill - written)
        self.base += written
        self.fill -= written

    def _write(self, length: int) -> None:
        view = memoryview(self.stage)[:length]
        try:
            if self.direct_fd is not None:
                done = pwrite_from(self.direct_fd, view, self.base)
                if done.error is not None and done.error.errno == errno.EINVAL and not done.got:
                    self.direct_fd = None  # the filesystem refused this one after all: the cache from now on
                if self.direct_fd is not None:
                    check_written(self.path, done, length, self.base)
                    return
            done = pwrite_from(self.fd, view, self.base)
            check_written(self.path, Filled(done.got, done.error), length, self.base)
        finally:
            view.release()
