"""A block device holding exactly one partition (or region) of a disk or image.

The kernel's partition node when one exists with the same start and size
(a real kernel makes them; checked through sysfs, since a stale node of an
older table may have the right name and the wrong place), else a loop device
over the region (``losetup --offset --sizelimit``), detached on every exit.
"""

from __future__ import annotations

import contextlib
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
def region_device(path: str, start: int, size: int, *, writable: bool = False) -> Iterator[str | None]:
    """A device for the region; None when none can be made (not root, no loop)."""
    node = kernel_node(path, start, size)
    if node is not None:
        yield node
        return
    argv = ["losetup", "--find", "--show", "--offset", str(start), "--sizelimit", str(size)]
    if not writable:
        argv.append("--read-only")
    proc = run.run([*argv, path], check=False)
    loop = proc.stdout.decode().strip()
    if proc.returncode != 0 or not loop:
        yield None
        return
    try:
        yield loop
    finally:
        run.run(["losetup", "--detach", loop], check=False)
