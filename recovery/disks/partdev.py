"""A block device holding exactly one partition (or region) of a disk or image.

The kernel's partition node when one exists with the same start and size
(a real kernel makes them; checked through sysfs, since a stale node of an
older table may have the right name and the wrong place), else a loop device
over the region (``losetup --offset --sizelimit``), detached on every exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from recovery import run
from recovery.disks import blockdev


def kernel_node(path: str, start: int, size: int) -> str | None:
    """The kernel's node for [start, start+size) of the disk ``path``, if it has one."""
    try:
        node = blockdev.inspect(path)
    except OSError:
        return None
    if not node.is_block:
        return None
    if start == 0 and size == node.size:
        return node.path
    for part in blockdev.kernel_partitions(node.rdev):
        if part.start == start and part.size == size:
            dev = blockdev.node_path(part.rdev)
            if dev and os.path.exists(dev):
                return dev
    return None


@contextlib.contextmanager
def region_device(
    path: str,
    start: int,
    size: int,
    *,
    writable: bool = False,
    direct: bool = False,
    kernel: bool = True,
    sector_size: int = 512,
) -> Iterator[str | None]:
    """A device for the region; None when none can be made (not root, no loop). ``direct``: a loop device
    made for it reads past the page cache (on a failing disk a bad sector then fails only its own reads,
    not its whole page's). ``kernel=False``: never the kernel's node (which is writable), always a loop
    device, read-only unless ``writable``, with logical sectors of ``sector_size`` bytes."""
    node = kernel_node(path, start, size) if kernel else None
    if node is not None:
        yield node
        return
    argv = ["losetup", "--find", "--show", "--offset", str(start), "--sizelimit", str(size)]
    if not writable:
        argv.append("--read-only")
    if direct:
        argv.append("--direct-io=on")
    if sector_size != 512:
        argv += ["--sector-size", str(sector_size)]
    proc = run.run([*argv, path], check=False)
    loop = proc.stdout.decode().strip()
    if proc.returncode != 0 or not loop:
        yield None
        return
    try:
        yield loop
    finally:
        run.run(["losetup", "--detach", loop], check=False)


@contextlib.contextmanager
def private_region(path: str, start: int, size: int) -> Iterator[str | None]:
    """A read-only loop device over the region, for a program that reads what a peer wrote
    (:func:`recovery.run.confined`): never the kernel's partition node; locked (``flock``), so udev leaves it
    alone while it exists (it probes no filesystem on it); as root owned by the unprivileged user while it
    is lent, and given back to root before it is detached. None when none can be made (not root, no loop)."""
    proc = run.run(
        ["losetup", "--find", "--show", "--read-only", "--offset", str(start), "--sizelimit", str(size), path],
        check=False,
    )
    loop = proc.stdout.decode().strip()
    if proc.returncode != 0 or not loop:
        yield None
        return
    fd = -1
    try:
        fd = os.open(loop, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        if os.geteuid() == 0:
            os.chown(loop, run.UNPRIVILEGED, run.UNPRIVILEGED)
        try:
            yield loop
        finally:
            if os.geteuid() == 0:
                os.chown(loop, st.st_uid, st.st_gid)
    finally:
        run.run(["losetup", "--detach", loop], check=False)
        if fd >= 0:
            os.close(fd)  # the lock goes last: the device is already detached


def partition_node(disk: str, number: int) -> str:
    """The kernel's node for partition ``number`` of ``disk`` (nvme0n1 -> nvme0n1p2, sda -> sda2)."""
    return f"{disk}p{number}" if disk[-1:].isdigit() else f"{disk}{number}"
