"""Low-level facts about block devices and image files: size, sysfs, ioctls, positioned reads."""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from recovery.errors import TargetWriteError
from recovery.sysattr import read_attr

# ioctl numbers from <linux/fs.h>
BLKGETSIZE64 = 0x80081272
BLKFLSBUF = 0x1261
BLKRRPART = 0x125F
BLKZEROOUT = 0x127F
BLKSSZGET = 0x1268  # logical sector size

SYS_DEV_BLOCK = Path("/sys/dev/block")
SPARING_PIECE = 64 << 10  # read_sparing's reads, before it goes sector by sector


@dataclass(frozen=True)
class Node:
    """A path as found on disk: a block device or a regular file."""

    path: str
    is_block: bool
    rdev: int  # st_rdev for devices, 0 for files
    dev: int  # st_dev (the filesystem a file lives on)
    ino: int
    size: int

    @property
    def devnum(self) -> str:
        return f"{os.major(self.rdev)}:{os.minor(self.rdev)}"


def inspect(path: str) -> Node:
    """Stat ``path`` (following links) and measure it. Raises OSError."""
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = device_size(fd)
        finally:
            os.close(fd)
        return Node(os.path.realpath(path), True, st.st_rdev, st.st_dev, st.st_ino, size)
    if stat.S_ISREG(st.st_mode):
        return Node(os.path.realpath(path), False, 0, st.st_dev, st.st_ino, st.st_size)
    raise IsADirectoryError(f"{path} is neither a block device nor a regular file")


def device_size(fd: int) -> int:
    st = os.fstat(fd)
    if not stat.S_ISBLK(st.st_mode):
        return st.st_size
    buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    return int(struct.unpack("Q", buf)[0])


class Filled(NamedTuple):
    """What :func:`pread_into` got: ``got`` bytes, and the error that stopped it (None: full, or the end)."""

    got: int
    error: OSError | None


def pread_into(fd: int, view: memoryview, offset: int) -> Filled:
    """Fill ``view`` from ``fd`` at ``offset``, going on after short reads and EINTR.

    Stops early at the end of the file (``got < len(view)``, no error) or at an
    error, which is returned with how far it got: what either means (a source
    that cannot be read, a target that cannot be read back) is the caller's to say.
    """
    got = 0
    while got < len(view):
        n, e = pread_once(fd, view[got:], offset + got)
        if e is not None:
            return Filled(got, e)
        if n == 0:
            break
        got += n
    return Filled(got, None)


def pread_once(fd: int, view: memoryview, offset: int) -> Filled:
    """One read into ``view`` (again after EINTR): a short read is returned as it is, not continued
    (on a failing disk the rest is where it failed; a rescue reads it otherwise than whole)."""
    while True:
        try:
            return Filled(os.preadv(fd, [view], offset), None)
        except InterruptedError:
            continue
        except OSError as e:
            return Filled(0, e)


def read_sparing(path: str, offset: int, size: int, sector: int = 512) -> tuple[bytes, int]:
    """``size`` bytes at ``offset`` of ``path`` (both sector-aligned) as far as they can be read: a piece
    that fails is read again sector by sector, past the page cache, and what fails then stays zero. The
    bytes and how many sectors failed. For a quick look at a failing disk's few metadata areas."""
    out = bytearray(size)
    buf = mmap.mmap(-1, SPARING_PIECE)  # page-aligned, for O_DIRECT
    failed = 0
    fd = _open_direct(path)
    try:
        for at in range(0, size, SPARING_PIECE):
            n = min(SPARING_PIECE, size - at)
            view = memoryview(buf)[:n]
            got, e = pread_into(fd, view, offset + at)
            if e is None:
                out[at : at + got] = view[:got]
                continue
            for s in range(at, at + n, sector):
                one = memoryview(buf)[:sector]
                got, e = pread_into(fd, one, offset + s)
                if e is None:
                    out[s : s + got] = one[:got]
                else:
                    failed += 1
    finally:
        os.close(fd)
    return bytes(out), failed


def _open_direct(path: str) -> int:
    """``path`` read-only past the page cache where it allows that (a file on tmpfs does not)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def pwrite_from(fd: int, view: memoryview, offset: int) -> Filled:
    """Write all of ``view`` to ``fd`` at ``offset``, going on after short writes and EINTR.

    Stops early when the file takes no more (``got < len(view)``, no error: full) or at an error,
    returned with how far it got; the caller says what either means."""
    got = 0
    while got < len(view):
        try:
            n = os.pwrite(fd, view[got:], offset + got)
        except InterruptedError:
            continue
        except OSError as e:
            return Filled(got, e)
        if n == 0:
            break
        got += n
    return Filled(got, None)


def check_written(path: str, done: Filled, want: int, offset: int) -> None:
    """A write that stopped short of ``want`` bytes is the target's error, at the byte it stopped."""
    at = offset + done.got
    if done.error is not None:
        raise TargetWriteError(f"cannot write {path} at byte {at}: {done.error.strerror}")
    if done.got < want:
        raise TargetWriteError(f"{path} took no bytes at {at} (full?)")


def write_all(fd: int, path: str, data: bytes | bytearray | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset`` of ``fd`` (the file ``path``), or :class:`TargetWriteError`."""
    view = memoryview(data)
    check_written(path, pwrite_from(fd, view, offset), len(view), offset)


def logical_sector_size(fd: int) -> int | None:
    """The sector size partition tables count in: the device's logical one;
    for an image file, 4096 if its GPT sits at 4096 (a 4Kn disk's image),
    512 if at 512, else None (nothing says)."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        return int(struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0])
    for size in (512, 4096):
        if os.pread(fd, 8, size) == b"EFI PART":
            return size
    return None


def sysfs_dir(rdev: int) -> Path:
    """/sys/block/... directory of a device number (resolved)."""
    return (SYS_DEV_BLOCK / f"{os.major(rdev)}:{os.minor(rdev)}").resolve()


def is_partition(rdev: int) -> bool:
    return (sysfs_dir(rdev) / "partition").exists()


def parent_disk(rdev: int) -> int | None:
    """The whole disk's device number for a partition, else None."""
    d = sysfs_dir(rdev)
    if not (d / "partition").exists():
        return None
    text = read_attr(d.parent / "dev")
    if not text:
        return None
    major, minor = text.split(":")
    return os.makedev(int(major), int(minor))


def devnum_of(text: str) -> int:
    major, minor = text.split(":")
    return os.makedev(int(major), int(minor))


def slaves(rdev: int) -> list[int]:
    """Devices underneath a device-mapper or md device (recursively)."""
    out: list[int] = []
    d = sysfs_dir(rdev) / "slaves"
    if d.is_dir():
        for entry in d.iterdir():
            dev = read_attr(entry / "dev")
            if dev:
                num = devnum_of(dev)
                out.append(num)
                out.extend(slaves(num))
    return out


def holders(rdev: int) -> list[str]:
    d = sysfs_dir(rdev) / "holders"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def loop_backing(rdev: int) -> tuple[str, int] | None:
    """(backing file, offset) of a loop device, else None."""
    d = sysfs_dir(rdev) / "loop"
    backing = read_attr(d / "backing_file")
    if not backing:
        return None
    offset = read_attr(d / "offset") or "0"
    return backing, int(offset)


def partitions_of(rdev: int) -> list[int]:
    """Device numbers of the kernel's partition nodes of a disk."""
    d = sysfs_dir(rdev)
    out = []
    for entry in d.iterdir():
        if (entry / "partition").exists():
            dev = read_attr(entry / "dev")
            if dev:
                out.append(devnum_of(dev))
    return out


@dataclass(frozen=True)
class KernelPartition:
    """A partition node the kernel made for a disk: where it lies, in bytes."""

    rdev: int
    start: int
    size: int


def kernel_partitions(rdev: int) -> list[KernelPartition]:
    """The kernel's partition nodes of a disk, with their start and size (sysfs counts 512-byte units)."""
    out = []
    for num in partitions_of(rdev):
        d = sysfs_dir(num)
        start, size = read_attr(d / "start"), read_attr(d / "size")
        if start and size and start.isdigit() and size.isdigit():
            out.append(KernelPartition(num, int(start) * 512, int(size) * 512))
    return out


@dataclass(frozen=True)
class Hardware:
    """What names the hardware of a whole disk, as sysfs says (udev may know more)."""

    wwn: str | None
    serial: str | None
    model: str | None


def hardware(rdev: int) -> Hardware:
    """WWN, serial and model of the whole disk holding ``rdev``: SCSI/ATA/NVMe keep the
    serial under ``device/``, virtio disks (``vdX``) directly in the disk's directory."""
    disk = parent_disk(rdev) or rdev
    d = sysfs_dir(disk)
    return Hardware(
        wwn=read_attr(d / "wwid") or read_attr(d / "device" / "wwid"),
        serial=read_attr(d / "device" / "serial") or read_attr(d / "serial"),
        model=read_attr(d / "device" / "model"),
    )


def node_path(rdev: int) -> str | None:
    """The /dev path of a device number, from the kernel's uevent."""
    uevent = read_attr(sysfs_dir(rdev) / "uevent") or ""
    for line in uevent.splitlines():
        if line.startswith("DEVNAME="):
            return "/dev/" + line.split("=", 1)[1]
    return None


def flush_buffers(fd: int) -> None:
    """Drop a block device's buffer cache after fsync (read-back must hit the disk)."""
    try:
        fcntl.ioctl(fd, BLKFLSBUF, 0)
    except OSError:
        pass


def reread_partitions(fd: int) -> bool:
    try:
        fcntl.ioctl(fd, BLKRRPART, 0)
        return True
    except OSError:
        return False


def zero_out(fd: int, offset: int, length: int) -> None:
    """BLKZEROOUT: let the device write zeros (fast on SSDs, loop, thin storage)."""
    fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
