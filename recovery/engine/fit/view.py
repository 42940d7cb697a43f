"""A writable copy-on-write view of a read-only source. Writes land in an overlay that holds only what was
written; the source is opened read-only and never written. Ended, with the overlay, on every exit.

Where the kernel has device-mapper snapshots (the appliance's does), the view is one: a read-only linear
device over a read-only loop of the source (zeros past its end), and a non-persistent snapshot of it whose
copy-on-write store is a sparse file. Elsewhere it is a qcow2 overlay whose backing is the source, served
by ``qemu-storage-daemon`` as one FUSE file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from recovery import run
from recovery.disks import blockdev
from recovery.errors import RecoveryError, ToolError, UsageError

STARTUP = 15.0  # seconds the daemon gets to show its file
FULL = 1 << 20  # bytes free under which the overlay's folder counts as full


@dataclass(frozen=True)
class View:
    path: str  # the snapshot's device, or the FUSE file: the source's bytes, then what was written over them
    size: int
    overlay: str  # the file that holds the writes (the snapshot's store, or the qcow2 overlay)
    kind: str  # "dm-snapshot" or "qemu-storage-daemon"
    dm_name: str = ""  # the snapshot's device-mapper name
    sector: int = 512  # the logical sector size its loop devices show (the source's)

    def exhausted(self) -> bool:
        """The overlay could take no more: the snapshot was invalidated, or the overlay's folder is full (what
        a failing write in the view then means)."""
        if self.dm_name:
            proc = run.run(["dmsetup", "status", self.dm_name], check=False, timeout=10)
            if b"Invalid" in proc.stdout or b"Overflow" in proc.stdout:
                return True
        try:
            return shutil.disk_usage(os.path.dirname(self.overlay)).free < FULL
        except OSError:
            return False

    def overlay_bytes(self) -> int:
        """Bytes the overlay holds on its disk (what was written into the view, plus qcow2's tables)."""
        try:
            return os.stat(self.overlay).st_blocks * 512
        except OSError:
            return 0


def default_scratch() -> str:
    """Where overlays go unless told: the system's temporary folder (on the stick, its RAM)."""
    return tempfile.gettempdir()


@contextlib.contextmanager
def cow_view(source: str, size: int, scratch: str | None = None, sector: int = 512) -> Iterator[View]:
    """A view of ``source`` (a device or file, read-only) ``size`` bytes long: past the source's end it
    reads zeros. The overlay goes into a new folder in ``scratch``, removed with it. ``sector``: the logical
    sector size of the source, which the loop devices made over the view show."""
    dm = check_tools()
    folder = scratch or default_scratch()
    try:
        tmp = tempfile.mkdtemp(prefix="recovery-fit-", dir=folder)
    except OSError as e:
        raise UsageError(
            f"cannot make the copy-on-write overlay in {folder}: {e.strerror}", hint="give --scratch a writable folder"
        ) from None
    try:
        with _snapshot(source, size, tmp) if dm else _served(source, size, tmp) as view:
            yield dataclasses.replace(view, sector=sector)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_tools() -> bool:
    """That a view can be made here (:class:`MissingToolError` if not); True when it will be a snapshot."""
    if dm_snapshots():
        return True
    run.need_tool("qemu-img", "qemu-utils")
    run.need_tool("qemu-storage-daemon", "qemu-system-common")
    return False


def dm_snapshots() -> bool:
    """This kernel has device-mapper snapshots, and dmsetup is here (the module loaded if need be)."""
    if run.find_tool("dmsetup") is None:
        return False
    modprobe = run.find_tool("modprobe")
    for _ in range(2):
        try:
            proc = run.run(["dmsetup", "targets"], check=False, timeout=10)
            if proc.returncode == 0 and any(line.split()[:1] == [b"snapshot"] for line in proc.stdout.splitlines()):
                return True
            if modprobe is None or run.run([modprobe, "dm_snapshot"], check=False, timeout=10).returncode != 0:
                return False
        except RecoveryError:  # a tool that does not answer: no snapshots here
            return False
    return False


@contextlib.contextmanager
def _snapshot(source: str, size: int, tmp: str) -> Iterator[View]:
    name = f"usb4-recovery-{os.path.basename(tmp)}"
    store = os.path.join(tmp, "cow")
    with open(store, "wb") as f:
        f.truncate(size)  # sparse: it takes only what is written
    with contextlib.ExitStack() as stack:
        origin = stack.enter_context(_loop(source, writable=False))
        cow = stack.enter_context(_loop(store, writable=True))
        have, want = blockdev.inspect(origin).size // 512, size // 512
        table = f"0 {min(have, want)} linear {origin} 0\n"
        if want > have:
            table += f"{have} {want - have} zero\n"
        # Devices named by their numbers and the kernel's nodes: nothing waits for udev.
        quiet = ["--noudevsync", "--noudevrules"]
        run.run(["dmsetup", "create", f"{name}-base", "--readonly", *quiet], input=table.encode())
        stack.callback(_dm_remove, f"{name}-base")
        snap = f"0 {want} snapshot {_devnum(f'{name}-base')} {cow} N 16\n"  # N: not persistent; 8 KiB chunks
        run.run(["dmsetup", "create", name, *quiet], input=snap.encode())
        stack.callback(_dm_remove, name)
        yield View(_node(_devnum(name)), size, store, "dm-snapshot", name)


def _node(devnum: str) -> str:
    """The kernel's own node of a device-mapper device (devtmpfs makes /dev/dm-MINOR as the device appears; a
    node made elsewhere may sit on a nodev filesystem, as /tmp is on the stick)."""
    major, minor = (int(n) for n in devnum.split(":"))
    node = f"/dev/dm-{minor}"
    try:
        if os.stat(node).st_rdev == os.makedev(major, minor):
            return node
    except OSError:
        pass
    raise ToolError(f"the copy-on-write view's device {devnum} has no node {node}")


def _devnum(name: str) -> str:
    """A device-mapper device's "MAJOR:MINOR"."""
    argv = ["dmsetup", "info", "--columns", "--noheadings", "--separator", ":", "-o", "major,minor", name]
    return run.output(argv).strip()


def _dm_remove(name: str) -> None:
    run.run(["dmsetup", "remove", "--retry", "--noudevsync", name], check=False)


@contextlib.contextmanager
def _loop(path: str, *, writable: bool) -> Iterator[str]:
    argv = ["losetup", "--find", "--show", *([] if writable else ["--read-only"]), path]
    loop = run.output(argv).strip()
    try:
        yield loop
    finally:
        run.run(["losetup", "--detach", loop], check=False)


@contextlib.contextmanager
def _served(source: str, size: int, tmp: str) -> Iterator[View]:
    daemon = run.need_tool("qemu-storage-daemon", "qemu-system-common")
    overlay, fuse = os.path.join(tmp, "overlay.qcow2"), os.path.join(tmp, "view")
    run.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", overlay, str(size)])
    open(fuse, "wb").close()
    proto = "host_device" if stat.S_ISBLK(os.stat(source).st_mode) else "file"
    backing = {"driver": proto, "filename": source, "read-only": True}
    node = {
        "driver": "qcow2",
        "node-name": "view",
        "file": {"driver": "file", "filename": overlay},
        "backing": {"driver": "raw", "read-only": True, "file": backing},
    }
    export = {"type": "fuse", "id": "view", "node-name": "view", "mountpoint": fuse, "writable": True}
    # Its own session (a Ctrl-C reaches this process, which takes the view down in order), and ended with
    # this process however it ends (the parent-death signal).
    proc = run.start(
        [run.need_tool("setpriv", "util-linux"), "--pdeathsig=TERM", "--",
         daemon, "--blockdev", json.dumps(node), "--export", json.dumps(export)],
        new_session=True,
    )  # fmt: skip
    try:
        _await_mount(proc, fuse)
        yield View(fuse, size, overlay, "qemu-storage-daemon")
    finally:
        run.stop(proc)
        run.run(["umount", "--lazy", fuse], check=False)  # a daemon that died leaves its mount behind


def _await_mount(proc: subprocess.Popen[bytes], fuse: str) -> None:
    deadline = time.monotonic() + STARTUP
    while not os.path.ismount(fuse):
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
            raise ToolError(f"qemu-storage-daemon could not make the copy-on-write view: {err[-300:]}")
        if time.monotonic() > deadline:
            raise ToolError("qemu-storage-daemon did not show the copy-on-write view in time")
        time.sleep(0.02)
