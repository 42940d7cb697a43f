"""The source: a disk, partition or image file opened read-only."""

from __future__ import annotations

import errno
import mmap
import os
import stat

from recovery.disks import blockdev, usage
from recovery.disks import identity as disk_identity
from recovery.errors import RefusedError, SourceReadError, UsageError
from recovery.protocol.messages import Identity
from recovery.units import human_size


def check_source(path: str, *, allow_mounted: bool = False) -> None:
    """Refuse a source that cannot be copied; cheap, so callers run it before connecting."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(
            f"source {path} does not exist", hint="run `recovery disks` to see this machine's disks"
        ) from None
    except OSError as e:
        raise SourceReadError(f"cannot open source {path}: {e.strerror}") from None
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise UsageError(f"source {path} is neither a block device nor a regular file")
    if stat.S_ISBLK(st.st_mode) and not allow_mounted:
        writable = usage.writable_mounts(st.st_rdev)
        if writable:
            raise RefusedError(
                f"source {path} is mounted read-write at {', '.join(writable)}: a copy would be inconsistent",
                hint="unmount it (or remount read-only), or pass --allow-mounted",
            )


class Source:
    def __init__(self, path: str, *, allow_mounted: bool = False, identity: Identity | None = None) -> None:
        """``identity``: what the plan calls this source when it is not ``path``'s own (a fitted disk is the
        source's, with its own size and tables)."""
        check_source(path, allow_mounted=allow_mounted)
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceReadError(f"cannot open source {path}: {e.strerror}") from None
        self.path = os.path.realpath(path)
        self.size = blockdev.device_size(self.fd)
        if self.size == 0:
            os.close(self.fd)
            raise UsageError(f"source {path} is empty")
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
        self.identity: Identity = identity or disk_identity.identify(self.path, self.fd)
        self.bytes_read = 0

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` from ``offset`` or raise :class:`SourceReadError`."""
        n = len(view)
        got, error = blockdev.pread_into(self.fd, view, offset)
        if error is not None:
            at = first_bad_sector(self.path, offset + got, min(n - got + AHEAD, self.size - offset - got))
            where = (
                f"byte {at} (sector {at // SECTOR}, {human_size(at)})"
                if at is not None
                else f"byte {offset + got} ({human_size(offset + got)})"
            )
            raise SourceReadError(
                f"cannot read the source {self.path} at {where}: {error.strerror}",
                hint="the disk may be failing: run the same command again with --rescue to copy everything "
                "that can still be read (the clone resumes, and a mapfile lists what cannot)",
            )
        if got < n:
            raise SourceReadError(f"the source {self.path} ended at byte {offset + got}, expected {self.size}")
        self.bytes_read += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


AHEAD = 256 << 10  # a failed read may be the kernel's read-ahead beyond it: look this far past its end
SECTOR = 512  # how unreadable places are named to people: in 512-byte sectors, as ddrescuelog does


def first_bad_sector(path: str, start: int, length: int) -> int | None:
    """Where in [start, start+length) the first unreadable logical sector is, read one by one past the cache.

    A failed buffered read names the start of the kernel's read-ahead window, which can be 128 KiB
    before the sector that failed. None if the sectors read now, or cannot be read one by one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        sector = blockdev.logical_sector_size(fd) or SECTOR
        buf = memoryview(mmap.mmap(-1, max(sector, 4096)))[:sector]
        pos = start - start % sector
        while pos < start + length:
            try:
                os.preadv(fd, [buf], pos)
            except OSError as e:
                return pos if e.errno != errno.EINVAL else None
            pos += sector
        return None
    finally:
        os.close(fd)
