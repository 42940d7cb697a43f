"""A save never fills the filesystem it writes to (the attacker's review of issue 22: a peer's save into
a folder on an installed system's own disk could fill `/`). A real ext4 on a loop device, too small
for the disk saved into it: the save stops with a one-line error, the space other programs need and
root's reserve left free."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.diskimage.scan import unfinished_at
from recovery.engine.clone.imagetarget import LEFT_FOR_OTHERS
from recovery.errors import TargetWriteError
from tests.helpers import MIB, Recovery, fill_random, loop_device, mounted, sh

pytestmark = pytest.mark.root


def test_a_save_stops_before_the_drive_is_full(tmp_path: Path) -> None:
    source, backing = tmp_path / "disk.raw", tmp_path / "drive.raw"
    fill_random(source, 256 * MIB)  # random: stored as it is, far more than the drive holds
    with open(backing, "wb") as f:
        f.truncate(160 * MIB)
    with loop_device(backing, partitions=False) as dev:
        sh("mkfs.ext4", "-q", "-m", "5", dev)
        with mounted(dev) as drive:
            save = Recovery("image", "save", "--source", str(source), "--output", str(drive / "laptop.img"))
            assert save.wait() == TargetWriteError.exit_code, save.stderr
            assert "is nearly full" in save.stderr and "Traceback" not in save.stderr
            vfs = os.statvfs(drive)
            assert vfs.f_bavail * vfs.f_frsize >= LEFT_FOR_OTHERS  # what other programs need, still free
            assert vfs.f_bfree > vfs.f_bavail  # and root's reserve untouched
            assert unfinished_at(str(drive / "laptop.img"))  # kept: the same save goes on from there
