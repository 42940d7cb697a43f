"""A writable copy-on-write view of a read-only source: a qcow2 overlay whose backing is the source,
served by ``qemu-storage-daemon`` as one FUSE file. Writes land in the overlay (it holds only what was
written); the source is opened read-only and never written. Ended, with the overlay, on every exit."""

from __future__ import annotations

import contextlib
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
from recovery.errors import ToolError, UsageError

STARTUP = 15.0  # seconds the daemon gets to show its file


@dataclass(frozen=True)
class View:
    path: str  # the FUSE file: the source's bytes, then what was written over them
    size: int
    overlay: str  # the qcow2 file that holds the writes

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
def cow_view(source: str, size: int, scratch: str | None = None) -> Iterator[View]:
    """A view of ``source`` (a device or file, read-only) ``size`` bytes long: past the source's end it
    reads zeros. The overlay goes into a new folder in ``scratch``, removed with it."""
    run.need_tool("qemu-img", "qemu-utils")
    daemon = run.need_tool("qemu-storage-daemon", "qemu-system-common")
    folder = scratch or default_scratch()
    try:
        tmp = tempfile.mkdtemp(prefix="recovery-fit-", dir=folder)
    except OSError as e:
        raise UsageError(
            f"cannot make the copy-on-write overlay in {folder}: {e.strerror}", hint="give --scratch a writable folder"
        ) from None
    try:
        with _served(source, size, tmp, daemon) as view:
            yield view
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _served(source: str, size: int, tmp: str, daemon: str) -> Iterator[View]:
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
        yield View(fuse, size, overlay)
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
