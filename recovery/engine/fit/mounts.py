"""Mounting a partition of the view (to grow, shrink or fill it) or of the source (read-only, to measure
or copy from it), never the target. The view's filesystem has the source's UUID: XFS mounts it with
``nouuid``; Btrfs finds its devices by that UUID, so the kernel is first told to forget the unmounted ones
it knows (the source's among them), the device is mounted read-only, checked to be the one asked for, and
only then made writable. exFAT is mounted by the kernel's driver where it has one, else through FUSE
(exfat-fuse), with fixed owners and modes, so two mounts of it show the same."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from recovery import run
from recovery.errors import RefusedError, ToolError

# xfs: both copies of one XFS mounted at once; exfat: it stores no owners, so every mount shows these
OPTIONS = {"xfs": "nouuid", "exfat": "uid=0,gid=0,umask=022"}


@contextlib.contextmanager
def mounted(dev: str, fstype: str, *, writable: bool) -> Iterator[str]:
    """``dev`` mounted in a new folder, read-only unless ``writable``; unmounted (and the folder gone) after,
    however this ends. A writable one is synced first: a write that did not reach the view fails here."""
    where = tempfile.mkdtemp(prefix="recovery-fit-")
    done = False
    try:
        if fstype == "btrfs":
            _forget_btrfs(dev)
        _mount(dev, fstype, where, "ro" if writable and fstype == "btrfs" else ("rw" if writable else "ro"))
        if fstype == "btrfs":
            _check_btrfs_device(dev, where)
            if writable:
                _mount(dev, fstype, where, "remount,rw")
        yield where
        if writable:
            run.run(["sync", "--file-system", where])  # syncfs: its writeback's errors come back here
        done = True
    finally:
        _unmount(where, strict=writable and done)  # after an error, that error is the one told


def _unmount(where: str, *, strict: bool) -> None:
    """Unmount ``where`` if it is mounted and remove the folder (never what is in it). ``strict``: a
    filesystem that was written and cannot be unmounted cleanly is an error."""
    failed = False
    if os.path.ismount(where):
        if run.run(["umount", where], check=False).returncode != 0:
            failed = True
            run.run(["umount", "--lazy", where], check=False)
    with contextlib.suppress(OSError):
        os.rmdir(where)
    if failed and strict:
        raise ToolError(f"a filesystem written on the copy-on-write view could not be unmounted cleanly ({where})")


def _forget_btrfs(dev: str) -> None:
    """Have the kernel forget the unmounted devices it knows that hold the Btrfs on ``dev`` (the source's,
    which has its UUID): the mount then takes ``dev``. Other Btrfs are left as they are."""
    fsid = super_field(dev, "fsid")
    found = run.run(["blkid", "--match-token", f"UUID={fsid}", "--output", "device"], check=False)
    for other in found.stdout.decode(errors="replace").split():
        if os.path.realpath(other) != os.path.realpath(dev):
            run.run(["btrfs", "device", "scan", "--forget", other], check=False)  # a mounted one stays known


def _mount(dev: str, fstype: str, where: str, mode: str) -> None:
    options = ",".join(filter(None, [mode, OPTIONS.get(fstype, "")]))
    argv = ["mount", "-t", fstype, "-o", options, dev, where]
    if fstype == "exfat" and not in_kernel(fstype):  # its unmount waits for exfat-fuse to write all out
        argv = [run.need_tool("mount.exfat-fuse", "exfat-fuse"), "-o", options, dev, where]
    proc = run.run(argv, check=False)
    if proc.returncode != 0:
        words = " ".join((proc.stderr or b"").decode(errors="replace").split())[-200:]
        raise RefusedError(f"{dev} ({fstype}) could not be mounted {mode}: {words}")


def in_kernel(fstype: str) -> bool:
    """The running kernel mounts ``fstype`` itself (/proc/filesystems lists it: built in, or loaded)."""
    try:
        with open("/proc/filesystems", encoding="ascii", errors="replace") as f:
            return any(line.split()[-1:] == [fstype] for line in f)
    except OSError:
        return False


def _check_btrfs_device(dev: str, where: str) -> None:
    """The Btrfs mounted at ``where`` (read-only) is on ``dev`` and nothing else: else it is unmounted before
    anything is written, and this is refused."""
    fsid = super_field(dev, "fsid")
    try:
        devices = os.listdir(f"/sys/fs/btrfs/{fsid}/devices")
    except OSError as e:
        raise ToolError(f"cannot tell which device the kernel mounted for {dev}: {e.strerror}") from None
    if devices != [os.path.basename(os.path.realpath(dev))]:
        raise RefusedError(
            f"the kernel mounted the Btrfs of {dev} from {', '.join(devices)}: it is not resized here "
            "(another device holds the same filesystem)"
        )


def super_field(dev: str, name: str) -> str:
    """A field of the Btrfs superblock on ``dev`` (``btrfs inspect-internal dump-super``)."""
    for line in run.output(["btrfs", "inspect-internal", "dump-super", dev]).splitlines():
        key, _, value = line.partition("\t")
        if key == name:
            return value.strip()
    raise ToolError(f"the Btrfs superblock of {dev} has no {name}")
