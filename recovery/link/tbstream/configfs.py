"""The USB4STREAM ConfigFS tree: groups, streams and their attributes.

``<root>/<service>/<name>/`` with ``index``, ``in_hopid``, ``out_hopid``,
``ring_size``, ``throttling`` (and ``busy_poll`` on later drivers); what the
kernel does with each is in docs/links.md. Every call the kernel reacts to
(mkdir, rmdir, attribute writes, opening the character device) goes through
:class:`FsOps`, the one seam a test replaces with an emulated kernel.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import LinkError, UsageError
from recovery.link.tbstream.device import Device, FdDevice

CONFIGFS_ROOT = Path("/sys/kernel/config/thunderbolt/stream")
DEV_ROOT = Path("/dev")
MAX_NAME = 8  # a stream name becomes an XDomain property key
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,8}$")
# The kernel parses a group name with sscanf("%u-%llx.%u") and accepts trailing junk, but
# attaches the group only to a service of exactly that name: refuse anything else here.
GROUP_NAME = re.compile(r"^\d+-[0-9a-f]+\.\d+$")
MIN_HOPID = 8  # HopIDs 0..7 are reserved by the protocol
RING_SIZES = range(32, 4097)  # ring_size the kernel accepts
MAX_THROTTLING = 16_776_960  # ns


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

    def open_device(self, path: Path) -> Device:
        """Open ``/dev/tbstreamN`` non-blocking (ENXIO/EINVAL at once, never a sleep in the driver)."""
        return FdDevice.open(path)


@dataclass(frozen=True)
class StreamInfo:
    group: str
    name: str
    index: int
    in_hopid: int
    out_hopid: int
    ring_size: int
    throttling: int
    path: Path  # the ConfigFS directory
    device: Path  # /dev/tbstreamN
    busy_poll: int | None = None  # None: the driver has no busy_poll attribute (7.2)

    @property
    def configured(self) -> bool:
        """Both HopIDs are real ones (what the kernel needs to open the device)."""
        return self.in_hopid >= MIN_HOPID and self.out_hopid >= MIN_HOPID

    @property
    def hopid(self) -> int | None:
        """The one HopID of a stream set up by the project's rule (the same both ways), else None."""
        return self.in_hopid if self.configured and self.in_hopid == self.out_hopid else None


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
            values = {
                a: int(self.ops.read(path / a), 0)
                for a in ("index", "in_hopid", "out_hopid", "ring_size", "throttling")
            }
            busy = int(self.ops.read(path / "busy_poll"), 0) if (path / "busy_poll").exists() else None
        except (OSError, ValueError) as e:
            raise LinkError(f"cannot read stream {group}/{name} in ConfigFS: {_why(e)}") from None
        return StreamInfo(
            group,
            name,
            values["index"],
            values["in_hopid"],
            values["out_hopid"],
            values["ring_size"],
            values["throttling"],
            path,
            self.dev / f"tbstream{values['index']}",
            busy,
        )

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

    def write(self, group: str, name: str, attr: str, value: int) -> None:
        """Write one attribute; the kernel's refusal comes back as :class:`OSError` with its errno."""
        self.ops.write(self.stream_path(group, name) / attr, f"{value}\n")

    def zero_hopids(self, group: str, name: str) -> None:
        """Write 0 to both HopIDs: releases them and withdraws the stream's advertisement to the peer.

        rmdir alone does neither of the latter (the peer could adopt stale HopIDs), so
        every removal starts here. Needs the device closed (EBUSY while it is open).
        """
        for attr in ("in_hopid", "out_hopid"):
            try:
                self.write(group, name, attr, 0)
            except FileNotFoundError:
                return
            except OSError as e:
                raise LinkError(
                    f"cannot reset {attr} of stream {group}/{name}: {_why(e)}",
                    hint="is /dev/tbstreamN still open? `recovery stream list` shows the streams"
                    if e.errno == errno.EBUSY
                    else None,
                ) from None

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

    def remove_stream(self, group: str, name: str) -> bool:
        """Zero the HopIDs, then rmdir; False if the directory could not go (not empty, busy)."""
        path = self.stream_path(group, name)
        if not path.is_dir():
            return True
        self.zero_hopids(group, name)
        return self.remove(path)


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)
