"""A failing block device for tests: an image served by FUSE with bad sectors, on a read-only loop device."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import sh

SYSTEM_PYTHON = "/usr/bin/python3"  # with Debian's python3-fusepy (setup.sh --dev installs it)
SERVER = Path(__file__).with_name("fuse_disk.py")


def have_fuse() -> str | None:
    """Why failing disks cannot be made here (None: they can)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import fusepy"], capture_output=True)
    if probe.returncode != 0:
        return "the system's python3 has no fusepy (install python3-fusepy: ./setup.sh --dev)"
    return None


@dataclass
class FailingDisk:
    device: str  # the loop device, read-only
    config: Path
    reads_log: Path
    sector: int = 512

    def set_bad(self, sectors: list[int] | set[int], slow_after_error: float = 0.0) -> None:
        """Which sectors fail from now on (the server reads its config again when it changes)."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"bad": sorted(sectors), "sector": self.sector, "slow_after_error": slow_after_error})
        )
        os.replace(tmp, self.config)
        time.sleep(0.05)  # past the mtime's resolution, so the next read sees it

    def reads(self) -> list[tuple[int, int, bool]]:
        """Every read the disk served so far: (offset, size, ok)."""
        out = []
        for line in self.reads_log.read_text().splitlines():
            offset, size, result = line.split()
            out.append((int(offset), int(size), result == "ok"))
        return out

    def forget_reads(self) -> None:
        self.reads_log.write_text("")


@contextlib.contextmanager
def failing_disk(image: Path, bad: list[int], *, slow_after_error: float = 0.0) -> Iterator[FailingDisk]:
    """``image`` as a block device whose ``bad`` sectors (512 bytes) fail with EIO; always torn down."""
    why = have_fuse()
    if why:
        pytest.skip(why)
    work = image.parent / f"{image.name}.fuse"
    mountpoint = work / "mnt"
    mountpoint.mkdir(parents=True)
    disk = FailingDisk("", work / "config.json", work / "reads.log")
    disk.reads_log.write_text("")
    disk.set_bad(bad, slow_after_error)
    server = subprocess.Popen(
        [SYSTEM_PYTHON, str(SERVER), str(image), str(mountpoint), str(disk.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    loop = None
    try:
        deadline = time.monotonic() + 20
        while not (mountpoint / "disk").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                said = server.stderr.read().decode() if server.stderr else ""
                raise RuntimeError(f"the FUSE server did not come up: {said}")
            time.sleep(0.05)
        loop = sh("losetup", "--find", "--show", "--read-only", str(mountpoint / "disk")).stdout.strip()
        disk.device = loop
        disk.forget_reads()
        yield disk
    finally:
        if loop:
            sh("losetup", "--detach", loop, check=False)
        sh("umount", "-l", str(mountpoint), check=False)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
