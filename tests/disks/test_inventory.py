from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recovery.demo import build_sample_disk
from recovery.disks.inventory import describe_disk, list_disks
from tests.helpers import REPO, loop_device

pytestmark = pytest.mark.root


def test_loop_disk_shows_partitions_filesystems_and_used_space(tmp_path: Path) -> None:
    image = tmp_path / "inv.img"
    build_sample_disk(str(image), 96)
    with loop_device(image) as dev:
        info = describe_disk(dev)
        assert info.ptable == "gpt" and info.size == 96 << 20
        assert [(p.number, p.fstype) for p in info.partitions] == [(1, "ext4"), (2, "vfat")]
        assert info.partitions[0].label == "demo-root"
        assert info.partitions[0].used and info.partitions[0].used > 1 << 20
        assert info.refusal is None and not info.system
        assert dev in [d.path for d in list_disks()]
        out = subprocess.run([sys.executable, "-m", "recovery", "disks", "--json"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        listed = {d["path"]: d for d in json.loads(out)["disks"]}
        assert listed[dev]["partitions"][1]["fstype"] == "vfat"
        text = subprocess.run([sys.executable, "-m", "recovery", "disks"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout
        assert dev in text and "ext4" in text
