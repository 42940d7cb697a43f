"""An image's disk served as one read-only file through FUSE (mfusepy or fusepy, on libfuse 2 or 3).

The mount point is a regular file, which FUSE mounts over: reading it reads the disk at any offset,
through :class:`~recovery.diskimage.reader.ImageReader`, so only the chunks a read touches are
decoded and each is checked against its BLAKE3 first. A damaged chunk fails that read with EIO
(and is named through ``on_bad``); holes and zero chunks read as zeros. The FUSE loop runs in a
thread of this process; unmounting the file (here, or by anyone) ends it.
"""

from __future__ import annotations

import ctypes.util
import errno
import importlib
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from recovery.diskimage.reader import BadChunk, ImageReader
from recovery.errors import ImageError, MissingToolError

SUBTYPE = "usb4-recovery"  # findmnt shows the file as fuse.usb4-recovery


def _fuse() -> Any:
    """The FUSE binding: mfusepy (what setup.sh installs into the venv and build-image.sh into the stick,
    the version requirements/app.txt locks), else Debian 12's fusepy, the module it forked with the
    same API. A missing libfuse is a missing tool, not a traceback.

    mfusepy loads libfuse 2 where both are installed; it is told to take libfuse 3 where there is one (the
    stick has only that), whose lseek call lets a reader skip what the image does not store."""
    if "FUSE_LIBRARY_PATH" not in os.environ and ctypes.util.find_library("fuse3"):
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    try:
        return importlib.import_module("mfusepy")
    except ImportError:
        pass
    except OSError as e:  # the binding raises EnvironmentError without libfuse
        raise MissingToolError(f"FUSE is not usable: {e}", hint="install the Debian package fuse3") from None
    try:
        return importlib.import_module("fusepy")
    except (ImportError, OSError) as e:
        raise MissingToolError(
            f"FUSE is not usable: {e}", hint="install mfusepy (setup.sh does), or the Debian package python3-fusepy"
        ) from None


def _seeking(binding: Any) -> Any:
    """The binding's FUSE class, with the lseek call libfuse 3 has and mfusepy lists but does not pass on
    (its other calls' way: the operation's result, or an OSError's errno as a negative number). A binding
    without it (fusepy, on libfuse 2) serves the file without SEEK_DATA and SEEK_HOLE: every byte reads."""
    fields = [f[0] for f in getattr(getattr(binding, "fuse_operations", None), "_fields_", [])]
    if "lseek" not in fields or hasattr(binding.FUSE, "lseek"):
        return binding.FUSE

    class Seeking(binding.FUSE):  # type: ignore[misc]
        def lseek(self, path: bytes | None, offset: int, whence: int, fip: Any) -> int:
            fh = fip.contents.fh if fip else 0
            name = None if path is None else path.decode(self.encoding, self.errors)
            return int(self.operations.lseek(name, offset, whence, fh))

    return Seeking


_LOG_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_kept_log: Any = None  # the log callback libfuse holds, kept alive


def _quiet_thread_warning(binding: Any) -> None:
    """libfuse 3.14 (Debian 12's) says "Ignoring invalid max threads value 4294967295" on every mount made
    through fuse_main, on the user's terminal: about its own default, nothing to do with the mount. That
    line is dropped; libfuse's other messages still reach stderr (their format, without its arguments)."""
    global _kept_log
    lib = getattr(binding, "_libfuse", None)
    if _kept_log is not None or getattr(binding, "fuse_version_major", 2) < 3 or lib is None:
        return
    if not hasattr(lib, "fuse_set_log_func"):
        return

    def log(level: int, fmt: bytes, args: int) -> None:
        if not fmt.startswith(b"Ignoring invalid max threads"):
            os.write(2, b"fuse: " + fmt[:300])

    _kept_log = _LOG_FUNC(log)
    lib.fuse_set_log_func(_kept_log)


class DiskFile:
    """The FUSE operations of a file system that is one read-only file: the disk."""

    use_ns = True

    def __init__(self, image: ImageReader, on_bad: Callable[[BadChunk], None]) -> None:
        self.image = image
        self.on_bad = on_bad
        self.at = time.time_ns()
        self.ops = _fuse().FuseOSError

    def __call__(self, op: str, *args: Any) -> Any:
        """fusepy calls every operation through its operations object (mfusepy calls the methods)."""
        method = getattr(self, op, None)
        if method is None:
            raise self.ops(errno.ENOSYS)
        return method(*args)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if path != "/":
            raise self.ops(errno.ENOENT)
        return {
            "st_mode": stat.S_IFREG | 0o400,
            "st_nlink": 1,
            "st_size": self.image.size,
            "st_uid": os.geteuid(),
            "st_gid": os.getegid(),
            "st_atime": self.at,
            "st_mtime": self.at,
            "st_ctime": self.at,
        }

    def open(self, path: str, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise self.ops(errno.EROFS)
        return 0

    def lseek(self, path: str, offset: int, whence: int, fh: int) -> int:
        """SEEK_DATA and SEEK_HOLE from the image's index (the kernel answers the other kinds itself): a
        reader that skips holes (qemu-img, cp, bmaptool) reads only the chunks the image stores."""
        if offset < 0 or offset >= self.image.size:
            raise self.ops(errno.ENXIO)
        try:
            if whence == os.SEEK_DATA:
                found = self.image.next_data(offset)
                if found is None:
                    raise self.ops(errno.ENXIO)
                return found
            if whence == os.SEEK_HOLE:
                return self.image.next_hole(offset)
        except ImageError:
            raise self.ops(errno.EIO) from None
        raise self.ops(errno.EINVAL)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        size = max(0, min(size, self.image.size - offset))
        try:
            return self.image.read(offset, size)
        except BadChunk as e:
            self.on_bad(e)
            raise self.ops(errno.EIO) from None
        except ImageError:
            raise self.ops(errno.EIO) from None


class Served:
    """The disk of ``image`` served at the file ``path`` (made here; unmounting the file ends the loop)."""

    def __init__(self, image: ImageReader, path: str, on_bad: Callable[[BadChunk], None]) -> None:
        self.image = image
        self.path = path
        self.ops = DiskFile(image, on_bad)
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="fuse", daemon=True)

    def _loop(self) -> None:
        try:
            binding = _fuse()
            _quiet_thread_warning(binding)
            _seeking(binding)(self.ops, self.path, foreground=True, ro=True, fsname=SUBTYPE, subtype=SUBTYPE)
        except (RuntimeError, OSError) as e:
            self.failed = e

    def start(self, timeout: float = 10.0) -> None:
        """Mount and wait until the file reads as the disk."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
        os.close(fd)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while os.stat(self.path).st_size != self.image.size:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise MissingToolError(
                    f"FUSE did not serve {self.path}" + (f": {self.failed}" if self.failed else ""),
                    hint="check that /dev/fuse exists (modprobe fuse)",
                )
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()
