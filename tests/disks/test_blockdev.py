"""What names a disk's hardware in sysfs, for every kind of disk the appliance meets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.disks import blockdev


def _disk(root: Path, devnum: str, where: str, files: dict[str, str]) -> None:
    """A disk's sysfs directory at ``where`` (under root/devices) and its /sys/dev/block link."""
    d = root / "devices" / where
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text + "\n")
    (root / "dev" / "block").mkdir(parents=True, exist_ok=True)
    os.symlink(d, root / "dev" / "block" / devnum)


def test_a_virtio_disk_has_its_serial_in_its_own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10: QEMU's virtio disk given a serial showed '-': it is /sys/block/vdX/serial, not device/serial."""
    _disk(tmp_path, "254:0", "pci0000:00/virtio3/block/vda", {"serial": "TESTDISKB0", "size": "2048"})
    _disk(tmp_path, "8:0", "pci0000:00/ata1/host0/block/sda",
          {"device/serial": "S69ENF0R123456", "device/model": "Samsung SSD", "wwid": "naa.5002538e00000000"})
    monkeypatch.setattr(blockdev, "SYS_DEV_BLOCK", tmp_path / "dev" / "block")
    assert blockdev.hardware(os.makedev(254, 0)) == blockdev.Hardware(wwn=None, serial="TESTDISKB0", model=None)
    assert blockdev.hardware(os.makedev(8, 0)) == blockdev.Hardware(
        wwn="naa.5002538e00000000", serial="S69ENF0R123456", model="Samsung SSD")
