"""The USB4STREAM ConfigFS tree: groups, streams and their attributes.

``<root>/<service>/<name>/`` with ``index``, ``in_hopid``, ``out_hopid``,
``ring_size`` and ``throttling`` (see /work/shared/docs/usb4stream.md). Every
call that the kernel reacts to (mkdir, rmdir, attribute writes, opening the
character device) goes through :class:`FsOps`, the one seam a test replaces
with a stand-in that reacts like the kernel.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import LinkError, UsageError

CONFIGFS_ROOT = Path("/sys/kernel/config/thunderbolt/stream")
DEV_ROOT = Path("/dev")
MAX_NAME = 8  # a stream name becomes an XDomain property key
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,8}$")
GROUP_NAME = re.compile(r"^\d+-[0-9a-f]+\.\d+$")  # "%u-%llx.%u", like the service device
AUTO_HOPID = -1


class FsOps:
    """The file system calls the kernel reacts to."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> str:
        with open(path, "rb") as f:
            return f.read(4096).decode(errors="replace").strip()

    def write(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())  # one write(): ConfigFS stores it whole
        finally:
            os.close(fd)

    def open_device(self, path: Path) -> int:
        """Open ``/dev/tbstreamN`` without waiting for the peer (ENXIO/EINVAL at once)."""
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)


@dataclass(frozen=True)
class StreamInfo:
    group: str
    name: str
    index: int
    in_hopid: int
    out_hopid: int
    path: Path  # the ConfigFS directory
    device: Path  # /dev/tbstreamN

    @property
    def configured(self) -> bool:
        return self.in_hopid > 0 and self.out_hopid > 0


def check_name(name: str) -> str:
    if not STREAM_NAME.match(name):
        raise UsageError(f"bad stream name {name!r}: 1 to {MAX_NAME} letters, digits, '-' or '_'")
    return name


class StreamTree:
    """One host's ``thunderbolt/stream`` ConfigFS directory."""

    def __init__(self, root: Path | str = CONFIGFS_ROOT, dev: Path | str = DEV_ROOT, ops: FsOps | None = None) -> None:
        self.root = Path(root)
        self.dev = Path(dev)
        self.ops = ops or FsOps()

    def available(self) -> bool:
        return self.root.is_dir()

    def group_path(self, group: str) -> Path:
        if not GROUP_NAME.match(group):
            raise UsageError(f"bad stream group {group!r}: it is named like a service device, e.g. 0-1.0")
        return self.root / group

    def stream_path(self, group: str, name: str) -> Path:
        return self.group_path(group) / check_name(name)

    def groups(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if (self.root / n).is_dir())
        except OSError:
            return []

    def names(self, group: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root / group) if (self.root / group / n).is_dir())
        except OSError:
            return []

    def streams(self) -> list[StreamInfo]:
        found = []
        for group in self.groups():
            for name in self.names(group):
                try:
                    found.append(self.info(group, name))
                except LinkError:
                    continue  # removed while we looked
        return found

    def info(self, group: str, name: str) -> StreamInfo:
        path = self.stream_path(group, name)
        try:
            index = int(self.ops.read(path / "index"))
            in_hopid = int(self.ops.read(path / "in_hopid"))
            out_hopid = int(self.ops.read(path / "out_hopid"))
        except (OSError, ValueError) as e:
            raise LinkError(f"cannot read stream {group}/{name} in ConfigFS: {_why(e)}") from None
        return StreamInfo(group, name, index, in_hopid, out_hopid, path, self.dev / f"tbstream{index}")

    def make_group(self, group: str) -> bool:
        """Create the group if needed; True if this call created it."""
        try:
            self.ops.mkdir(self.group_path(group))
        except FileExistsError:
            return False
        except OSError as e:
            raise LinkError(f"cannot create stream group {group} in ConfigFS: {_why(e)}") from None
        return True

    def make_stream(self, group: str, name: str) -> None:
        """Create a stream directory; :class:`FileExistsError` if it is there already."""
        try:
            self.ops.mkdir(self.stream_path(group, name))
        except FileExistsError:
            raise
        except OSError as e:
            raise LinkError(f"cannot create stream {group}/{name} in ConfigFS: {_why(e)}") from None

    def allocate(self, group: str, name: str) -> StreamInfo:
        """Ask the kernel for free HopIDs in both directions."""
        path = self.stream_path(group, name)
        for attr in ("in_hopid", "out_hopid"):
            try:
                self.ops.write(path / attr, str(AUTO_HOPID))
            except OSError as e:
                raise LinkError(f"cannot allocate {attr} for stream {group}/{name}: {_why(e)}") from None
        return self.info(group, name)

    def remove(self, path: Path) -> bool:
        """rmdir a stream or group; False if it is not empty (someone else's streams)."""
        try:
            self.ops.rmdir(path)
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EBUSY):
                return False
            raise LinkError(f"cannot remove {path} from ConfigFS: {_why(e)}") from None
        return True


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)
