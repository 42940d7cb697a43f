"""The target: where the receiver writes, and nowhere else.

A block device is opened with O_EXCL (a mounted disk fails to open); an
image file is created sparse, or emptied and made sparse again. Writes are
positioned (pwrite) inside ``[0, size)`` only. Zeros cost no storage where
the target can help it: holes in files (punched, or left alone in a fresh
file); on devices ``fallocate(PUNCH_HOLE)``, which the kernel turns into a
write-zeroes that may unmap (thin LVs, loop devices over sparse files, SSDs
give the space back) and which always reads back zero; else BLKZEROOUT
(zeroes, but may allocate); else written zeros. The first and last MiB (partition tables, the
backup GPT) are wiped before the first write and written last, so an
interrupted clone never looks like a valid disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import time

from recovery.disks import blockdev, identity, safety
from recovery.errors import RefusedError, TargetWriteError, VerificationError
from recovery.protocol.messages import Identity
from recovery.units import human_size

EDGE = 1 << 20  # bytes at each end that hold partition tables
LOCK_WAIT = 3.0  # seconds to wait for a disk another program has locked (udev locks it while it looks)
DIRECT_ALIGN = 4096
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
_ZEROS = bytes(4 << 20)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def punch_hole(fd: int, offset: int, length: int) -> int:
    """Deallocate [offset, offset+length) so that it reads zero: 0, or the errno of the refusal."""
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return 0
    return ctypes.get_errno() or errno.EOPNOTSUPP


class Target:
    """The one descriptor every check and write goes through: opened once, never by name again.

    An image file is opened without following a symbolic link (one planted at
    the path is refused) and created readable by its owner only.
    """

    def __init__(self, path: str, *, no_links: bool = False) -> None:
        """``no_links``: a path a peer chose (a folder's image): no symbolic link anywhere on it."""
        self.created = False
        self.fd, name = self._open(path, no_links)
        st = os.fstat(self.fd)  # what was opened decides, not what the name said a moment before
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not (self.is_block or stat.S_ISREG(st.st_mode)):
            os.close(self.fd)
            raise RefusedError(f"{path} is neither a block device nor a regular file")
        if not self.is_block and not self.created:
            os.fchmod(self.fd, 0o600)  # it will hold a disk's contents
        self.path = os.path.realpath(name)
        self._stat = os.fstat(self.fd)
        self.size = blockdev.device_size(self.fd)
        self.direct_fd: int | None = None  # O_DIRECT twin for aligned writes
        self.lock_fd = self._lock() if self.is_block else -1
        self.fresh = False  # True once a file target is empty and sparse
        self.can_punch = True  # until the device refuses fallocate(PUNCH_HOLE)
        self.bytes_written = 0

    def _lock(self) -> int:
        """Hold the disk locked (BSD flock, as udev and partitioning tools agree) from now until
        :meth:`unlock`: udev then neither re-reads its partition table when our writable descriptor closes
        nor probes what a peer wrote on it while the clone and its checks run."""
        fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:  # udev holds it only while it looks: someone else does
                    os.close(fd)
                    os.close(self.fd)
                    raise RefusedError(f"refusing to write {self.path}: another program holds it locked") from None
                time.sleep(0.1)

    def unlock(self) -> None:
        """The clone is over, its checks done: udev may look at the disk again."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def _open(self, path: str, no_links: bool) -> tuple[int, str]:
        """Open once, never following a link at the last step (``no_links``: nowhere on the path): an
        existing device exclusively (O_EXCL: a mounted one fails), an existing file as it is, or a new
        file (0600)."""
        name = safety.refuse_planted_link(path)
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        opener = safety.open_without_links if no_links else os.open
        try:
            try:
                return opener(name, flags | os.O_EXCL), name  # O_EXCL without O_CREAT: for devices only
            except FileNotFoundError:
                fd = opener(name, flags | os.O_CREAT | os.O_EXCL, 0o600)
                self.created = True
                return fd, name
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise RefusedError(f"refusing to write {path}: it is in use (mounted or claimed)") from None
            if e.errno == errno.ELOOP:
                raise RefusedError(f"refusing to write {path}: it became a symbolic link") from None
            raise RefusedError(f"cannot open {path} for writing: {e.strerror}") from None

    @property
    def read_path(self) -> str:
        """Where the read-back reads: the very file written (a name could be replaced meanwhile)."""
        if not self.is_block and self.fd >= 0 and os.path.isdir("/proc/self/fd"):
            return f"/proc/self/fd/{self.fd}"
        return self.path

    def check_still_there(self) -> None:
        """After closing: the name still leads to the storage that was written (checkers open it by name)."""
        try:
            now = os.stat(self.path)
        except OSError as e:
            raise VerificationError(f"{self.path} cannot be checked: {e.strerror}") from None
        same = (now.st_rdev == self._stat.st_rdev) if self.is_block else os.path.samestat(now, self._stat)
        if not same:
            raise VerificationError(
                f"{self.path} was replaced after it was written; it is not the copy",
                hint="keep other programs away from the target while a clone runs",
            )

    def room(self) -> int:
        """Bytes an image file may fill: the free space of its filesystem (for this user) and what
        the file holds now (a fresh clone empties it first)."""
        vfs = os.fstatvfs(self.fd)
        return vfs.f_bavail * vfs.f_frsize + os.fstat(self.fd).st_blocks * 512

    def identity(self) -> Identity:
        return identity.identify(self.path, self.fd)

    def recheck(self, pinned: Identity) -> None:
        """Right before the first write: is this still the disk the plan pinned?"""
        try:
            found = self.identity()
        except OSError as e:
            raise RefusedError(f"cannot re-check the target {self.path}: {e.strerror}") from None
        why = identity.mismatch(pinned, found)
        if why:
            raise RefusedError(f"refusing to write {self.path}: {why}")

    def prepare(self, size: int) -> None:
        """Make room and wipe old partition tables; the first write of the run."""
        if not self.is_block:
            try:
                os.ftruncate(self.fd, 0)
                os.ftruncate(self.fd, size)
            except OSError as e:
                raise TargetWriteError(f"cannot size {self.path} to {human_size(size)}: {e.strerror}") from None
            self.size = size
            self.fresh = True
            return
        if size > self.size:
            raise RefusedError(f"{self.path} is too small for {human_size(size)}")
        self.zero(0, min(EDGE, self.size))
        tail = min(EDGE, self.size)
        self.zero(self.size - tail, tail)
        self.flush()

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            # Frames are checked against the plan before they get here; this
            # is the last line of defence against writing outside the target.
            raise TargetWriteError(f"refusing a write at {offset}+{length} outside {self.path}")

    def _direct(self) -> int | None:
        """An O_DIRECT twin of the descriptor, if the device or filesystem allows one.

        Opened through ``/proc/self/fd``, so it is the very file that was opened
        and checked, whatever the name points at now.
        """
        if self.direct_fd is None:
            try:
                self.direct_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
                if not os.path.samestat(os.fstat(self.direct_fd), os.fstat(self.fd)):
                    os.close(self.direct_fd)
                    self.direct_fd = -1
            except OSError:
                self.direct_fd = -1
        return self.direct_fd if self.direct_fd >= 0 else None

    def write(self, data: memoryview | bytes, offset: int, *, aligned_buffer: bool = False) -> None:
        """Write ``data`` at ``offset``. A page-aligned buffer at an aligned
        offset goes past the page cache (O_DIRECT): no cache to fill, nothing
        left dirty for the flush, and read-back must hit the disk anyway."""
        self._check_range(offset, len(data))
        view = memoryview(data)
        fd = self.fd
        if aligned_buffer and offset % DIRECT_ALIGN == 0 and len(view) % DIRECT_ALIGN == 0:
            fd = self._direct() or self.fd
        done = blockdev.pwrite_from(fd, view, offset)
        if fd != self.fd and done.error is not None and done.error.errno == errno.EINVAL:
            # O_DIRECT refused this one: the rest through the cache
            rest = blockdev.pwrite_from(self.fd, view[done.got :], offset + done.got)
            done = blockdev.Filled(done.got + rest.got, rest.error)
        blockdev.check_written(self.path, done, len(view), offset)
        self.bytes_written += len(view)

    def zero(self, offset: int, length: int) -> None:
        self._check_range(offset, length)
        if self.fresh:
            return  # an emptied, sparse file reads zeros already
        if self.can_punch:
            refused = punch_hole(self.fd, offset, length)
            if not refused:
                return
            if refused in (errno.EOPNOTSUPP, errno.ENODEV, errno.ENOSYS):
                self.can_punch = False  # the device (or filesystem) cannot: stop asking
        if self.is_block:
            try:
                blockdev.zero_out(self.fd, offset, length)
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY):
                    raise TargetWriteError(f"cannot zero {self.path} at {offset}: {e.strerror}") from None
        pos = offset
        while pos < offset + length:
            n = min(len(_ZEROS), offset + length - pos)
            self.write(memoryview(_ZEROS)[:n], pos)
            pos += n

    def flush(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise TargetWriteError(f"cannot flush {self.path}: {e.strerror}") from None

    def drop_cache(self) -> None:
        """So that reading back hits the disk, not memory."""
        if self.is_block:
            blockdev.flush_buffers(self.fd)
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    def finish(self) -> None:
        """A disk that verified: ask the kernel to read its new partition table (opened again if it was
        closed for the checkers, and only if its name still leads to the disk written)."""
        if not self.is_block:
            return
        if self.fd >= 0:
            blockdev.reread_partitions(self.fd)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if os.fstat(fd).st_rdev == self._stat.st_rdev:
                blockdev.reread_partitions(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.direct_fd is not None and self.direct_fd >= 0:
            os.close(self.direct_fd)
        self.direct_fd = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def set_aside(self, suffix: str) -> str | None:
        """A file this run created, renamed to its name plus ``suffix`` (and closed, and no longer
        removed by :meth:`discard_created`): the new name, or None when it was not ours or the new
        name is taken (it is then removed as usual)."""
        if not self.created or self.is_block:
            return None
        aside = self.path + suffix
        try:
            if os.path.lexists(aside) or not os.path.samestat(os.lstat(self.path), self._stat):
                return None
            os.rename(self.path, aside)
        except OSError:
            return None
        self.created = False
        self.close()
        return aside

    def discard_created(self) -> None:
        """After a failure: remove an image file this run created (only if the name still is it)."""
        self.close()
        if self.created:
            try:
                if os.path.samestat(os.lstat(self.path), self._stat):  # the name still is the file made
                    os.unlink(self.path)
            except OSError:
                pass
            self.created = False
