"""The mount guard of a Btrfs on the view: the kernel finds a Btrfs's devices by its UUID, which the view
shares with the source; a mount of any other device than the one asked for is refused before it is made
writable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recovery.engine.fit import mounts
from recovery.errors import RefusedError
from tests.helpers import MIB, b3sum, fit_mounts, loop_device, sh

pytestmark = pytest.mark.root


def test_a_btrfs_mounted_from_another_device_than_asked_is_refused(tmp_path: Path) -> None:
    one, two = tmp_path / "one.img", tmp_path / "two.img"
    with open(one, "wb") as f:
        f.truncate(200 * MIB)
    sh("mkfs.btrfs", "-q", "-f", str(one))
    shutil.copyfile(one, two)  # the same UUID: a view and its source
    before, views = b3sum(str(one)), fit_mounts()
    with loop_device(one, partitions=False) as a, loop_device(two, partitions=False) as b:
        with mounts.mounted(b, "btrfs", writable=True) as where:  # the one asked for: made writable
            (Path(where) / "written").write_text("on b")
        with pytest.raises(RefusedError, match="another device holds the same filesystem"):
            with mounts.mounted(a, "btrfs", writable=False) as where:
                mounts._check_btrfs_device(b, where)  # as if the kernel had picked a for b
        assert fit_mounts() == views
    assert b3sum(str(one)) == before  # the source's copy: mounted read-only only
