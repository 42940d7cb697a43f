"""The source: a disk, partition or image file opened read-only."""

from __future__ import annotations

import os
import stat

from recovery.disks import blockdev, identity, usage
from recovery.errors import RefusedError, SourceReadError, UsageError
from recovery.protocol.messages import Identity
from recovery.units import human_size


def check_source(path: str, *, allow_mounted: bool = False) -> None:
    """Refuse a source that cannot be copied; cheap, so callers run it before connecting."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"source {path} does not exist",
                         hint="run `recovery disks` to see this machine's disks") from None
    except OSError as e:
        raise SourceReadError(f"cannot open source {path}: {e.strerror}") from None
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise UsageError(f"source {path} is neither a block device nor a regular file")
    if stat.S_ISBLK(st.st_mode) and not allow_mounted:
        writable = usage.writable_mounts(st.st_rdev)
        if writable:
            raise RefusedError(
                f"source {path} is mounted read-write at {', '.join(writable)}: "
                "a copy would be inconsistent",
                hint="unmount it (or remount read-only), or pass --allow-mounted",
            )


class Source:
    def __init__(self, path: str, *, allow_mounted: bool = False) -> None:
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
        self.identity: Identity = identity.identify(self.path, self.fd)
        self.bytes_read = 0

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` from ``offset`` or raise :class:`SourceReadError`."""
        got = 0
        n = len(view)
        while got < n:
            try:
                k = os.preadv(self.fd, [view[got:]], offset + got)
            except InterruptedError:
                continue
            except OSError as e:
                at = offset + got
                raise SourceReadError(
                    f"cannot read the source {self.path} at byte {at} ({human_size(at)}): {e.strerror}",
                    hint="the disk may be failing; an `exact` copy cannot skip bad sectors yet",
                ) from None
            if k == 0:
                raise SourceReadError(
                    f"the source {self.path} ended at byte {offset + got}, expected {self.size}"
                )
            got += k
        self.bytes_read += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
