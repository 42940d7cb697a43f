"""Looking inside an image without restoring it: its disk as a FUSE file, a read-only loop device over
that file, and each partition's filesystem mounted read-only.

Under DIR (an empty directory): ``DIR/disk`` is the whole disk (FUSE, read-only), ``DIR/p1``,
``DIR/p2`` … the partitions' filesystems. :func:`unmount` takes all of it down again in the reverse
order (filesystems, loop device, FUSE file) and finds what to take down from the system alone (the
mount table, the loop devices' backing files), so it works from another shell and after a crash too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recovery import events, run
from recovery.diskimage.fusedisk import Served
from recovery.diskimage.reader import BadChunk, ImageReader
from recovery.disks import partitions, usage
from recovery.errors import RefusedError, ToolError, UsageError
from recovery.run import CommandError

DISK = "disk"
PART = re.compile(r"p[0-9]+")

# Read-only for real: no journal replayed, no log recovered (a plain `ro` would still write them).
OPTIONS = {
    "ext3": "ro,noload",
    "ext4": "ro,noload",
    "xfs": "ro,norecovery",
    "btrfs": "ro,rescue=nologreplay",
}
# Filesystems mounted through a FUSE program (the kernel has no driver, or a worse one): program, package.
FUSE_TOOLS = {"ntfs": ("ntfs-3g", "ntfs-3g"), "exfat": ("mount.exfat-fuse", "exfat-fuse")}
NOT_FILESYSTEMS = {"swap", "crypto_LUKS", "LVM2_member", "linux_raid_member", "BitLocker"}


@dataclass(frozen=True)
class Part:
    number: int
    device: str
    fstype: str | None
    mountpoint: str | None  # None: not mounted, ``why`` says why
    why: str | None = None


def check_directory(directory: str) -> None:
    """DIR must be an empty directory of its own (not a link), and we must be root."""
    if os.geteuid() != 0:
        raise RefusedError("mounting an image needs root (loop devices and mounts)", hint="run it as root")
    if not os.path.lexists(directory):
        raise UsageError(f"{directory} does not exist", hint="give an empty directory to mount the image on")
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise UsageError(f"{directory} is not a directory", hint="give an empty directory to mount the image on")
    if os.listdir(directory):
        raise RefusedError(f"{directory} is not empty", hint="give an empty directory to mount the image on")


def mount_image(image: ImageReader, directory: str, out: events.EventSink, stop: threading.Event) -> None:
    """Serve, attach and mount the image under ``directory`` until ``stop`` is set (or someone unmounts
    it); then take everything down, on every way out."""
    check_directory(directory)
    base = os.path.realpath(directory)
    served = Served(image, os.path.join(base, DISK), _say_bad(out))
    try:
        served.start()
        loop = attach(served.path)
        parts = [mount_part(n, dev, os.path.join(base, f"p{n}")) for n, dev in partition_nodes(loop)]
        out(_event(image, base, served.path, loop, parts))
        while not stop.wait(0.2) and served.alive:
            pass
    finally:
        with _signals_deferred():
            _, warnings = unmount(base)
            for warning in warnings:
                out(events.Warning(warning))
            if served.thread.ident is not None:
                served.thread.join(10)
    out(events.Phase("unmount", f"unmounted {base}: nothing of {image.path} is mounted or attached now"))


def _say_bad(out: events.EventSink) -> Callable[[BadChunk], None]:
    said: set[int] = set()

    def bad(e: BadChunk) -> None:
        if e.entry.offset not in said:  # once per chunk: the kernel retries a failed read
            said.add(e.entry.offset)
            out(events.Warning(f"a read failed (EIO): {e.message}"))

    return bad


def attach(disk: str) -> str:
    """A read-only loop device over the disk file, with its partitions' nodes."""
    loop = run.output(["losetup", "--read-only", "--partscan", "--find", "--show", disk]).strip()
    if not _nodes(loop):
        run.run(["partx", "--add", loop], check=False)  # a kernel without partition-table parsers
    return loop


def _nodes(loop: str) -> list[tuple[int, str]]:
    name = os.path.basename(loop)
    found = []
    for entry in Path("/sys/block", name).glob(f"{name}p*"):
        number = entry.name[len(name) + 1 :]
        if number.isdigit():
            found.append((int(number), f"/dev/{entry.name}"))
    return sorted(found)


def partition_nodes(loop: str) -> list[tuple[int, str]]:
    """(number, device) of each partition; the whole disk as partition 0 when it has no table."""
    nodes = _nodes(loop)
    if nodes:
        for _, dev in nodes:
            _wait_for(dev)
        return nodes
    return [(0, loop)] if partitions.probe(loop).fstype else []


def _wait_for(dev: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(dev) and time.monotonic() < deadline:
        time.sleep(0.02)


def mount_part(number: int, dev: str, target: str, *, writable: bool = False) -> Part:
    """Mount one partition read-only (``writable``: read-write, a drive to save images to) at ``target``;
    say why not when it cannot be."""
    fstype = partitions.probe(dev).fstype
    if not fstype or fstype in NOT_FILESYSTEMS:
        return Part(number, dev, fstype, None, "it holds no filesystem to mount" if not fstype else "not a filesystem")
    os.mkdir(target, 0o700)
    tool = FUSE_TOOLS.get(fstype)
    options = "rw,nosuid,nodev,noexec" if writable else OPTIONS.get(fstype, "ro")
    attempts = [["mount", "-t", fstype, "-o", options, dev, target]]
    if tool and run.find_tool(tool[0]):  # NTFS: ntfs-3g first, the kernel's driver is the fallback
        attempts.insert(0 if fstype == "ntfs" else 1, [tool[0], "-o", options if writable else "ro", dev, target])
    why = ""
    for argv in attempts:
        try:
            run.run(argv, timeout=60)
            return Part(number, dev, fstype, target)
        except CommandError as e:
            why = why or (e.stderr.strip().splitlines() or [e.message])[0]  # mount's first line says why
        except ToolError as e:
            why = why or e.message
    os.rmdir(target)
    if tool and not run.find_tool(tool[0]):
        why += f" (install the Debian package {tool[1]} to mount it through FUSE)"
    return Part(number, dev, fstype, None, f"this system cannot mount {fstype}: {why}")


def _event(image: ImageReader, base: str, disk: str, loop: str, parts: list[Part]) -> events.ImageMounted:
    return events.ImageMounted(
        path=image.path,
        size=image.size,
        directory=base,
        disk=disk,
        loop=loop,
        parts=[
            {"number": p.number, "device": p.device, "fstype": p.fstype, "mountpoint": p.mountpoint, "why": p.why}
            for p in parts
        ],
    )


@contextlib.contextmanager
def served_disk(image: ImageReader) -> Iterator[str]:
    """The disk of ``image`` as a read-only FUSE file in a folder of its own, while the context lasts (a
    damaged chunk reads as EIO); taken down with what was made over it, however the context ends."""
    with tempfile.TemporaryDirectory(prefix="usb4-recovery-disk-") as base:
        served = Served(image, os.path.join(base, DISK), lambda bad: None)
        try:
            served.start()
            yield served.path
        finally:
            unmount(base)
            if served.thread.ident is not None:
                served.thread.join(10)


def unmount(directory: str) -> tuple[int, list[str]]:
    """Take down what a mount of an image left under ``directory``: its filesystems, loop devices and
    FUSE file; remove the mount points it made. How many it took down, and warnings for what stays."""
    base = os.path.realpath(directory)
    disk = os.path.join(base, DISK)
    warnings: list[str] = []
    mounts = _mounts_under(base)
    loops = _loops_of(disk)
    for m in sorted(mounts, key=len, reverse=True):
        if m != disk:
            warnings += _umount(m)
    for loop in loops:
        run.run(["partx", "--delete", loop], check=False)
        run.run(["losetup", "--detach", loop], check=False)
    if disk in mounts:
        warnings += _umount(disk)
    for name in os.listdir(base) if os.path.isdir(base) else ():
        with contextlib.suppress(OSError):
            if PART.fullmatch(name):
                os.rmdir(os.path.join(base, name))
            elif name == DISK and os.path.getsize(disk) == 0:
                os.unlink(disk)
    return len(mounts) + len(loops), warnings


def _mounts_under(base: str) -> list[str]:
    return [m.mountpoint for m in usage.mounts() if m.mountpoint.startswith(base + os.sep)]


def _umount(target: str) -> list[str]:
    for _ in range(10):
        if run.run(["umount", target], check=False).returncode == 0:
            return []
        time.sleep(0.2)
    run.run(["umount", "--lazy", target], check=False)
    return [f"{target} was busy (a program has a file open there): detached; it goes when that program lets go"]


def _loops_of(disk: str) -> list[str]:
    """The loop devices whose backing file is ``disk``."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            name = backing.read_text().strip().removesuffix(" (deleted)")
            if name == disk:
                found.append(f"/dev/{backing.parent.parent.name}")
    return found


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """A second Ctrl+C or SIGTERM while everything is taken down does not leave half of it up."""
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    try:
        old = {s: signal.signal(s, signal.SIG_IGN) for s in caught}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
