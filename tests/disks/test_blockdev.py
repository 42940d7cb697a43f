"""What names a disk's hardware in sysfs, for every kind of disk the appliance meets."""

from __future__ import annotations

import errno
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
    _disk(
        tmp_path,
        "8:0",
        "pci0000:00/ata1/host0/block/sda",
        {"device/serial": "S69ENF0R123456", "device/model": "Samsung SSD", "wwid": "naa.5002538e00000000"},
    )
    monkeypatch.setattr(blockdev, "SYS_DEV_BLOCK", tmp_path / "dev" / "block")
    assert blockdev.hardware(os.makedev(254, 0)) == blockdev.Hardware(wwn=None, serial="TESTDISKB0", model=None)
    assert blockdev.hardware(os.makedev(8, 0)) == blockdev.Hardware(
        wwn="naa.5002538e00000000", serial="S69ENF0R123456", model="Samsung SSD"
    )


def test_a_positioned_read_says_how_far_it_got_and_why_it_stopped(tmp_path: Path) -> None:
    """The end of the file is a short count; an error comes back with the count, for the caller to word."""
    path = tmp_path / "img"
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = memoryview(bytearray(1000))
        assert blockdev.pread_into(fd, buf[:100], 10) == blockdev.Filled(100, None)
        assert bytes(buf[:3]) == bytes([10, 11, 12])
        assert blockdev.pread_into(fd, buf, 100) == blockdev.Filled(924, None)
    finally:
        os.close(fd)
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: every read fails
    try:
        got, error = blockdev.pread_into(fd, buf, 0)
    finally:
        os.close(fd)
    assert got == 0 and error is not None and error.errno == errno.EISDIR


@pytest.mark.root
def test_read_sparing_reads_around_bad_sectors_once_each(tmp_path: Path) -> None:
    """Issue 25's look at a failing disk's metadata areas: what can be read, zeros for the rest, and each
    bad sector asked for once, alone (past the page cache: its neighbours in the same page are read)."""
    from tests.rescue.failing import failing_disk

    image = tmp_path / "source.img"
    data = os.urandom(256 << 10)
    image.write_bytes(data)
    bad = [3, 200, 201]
    with failing_disk(image, bad) as disk:
        got, failed = blockdev.read_sparing(disk.device, 0, len(data))
        singles = [off // 512 for off, n, ok in disk.reads() if n == 512 and not ok]
    expected = bytearray(data)
    for s in bad:
        expected[s * 512 : (s + 1) * 512] = bytes(512)
    assert failed == len(bad) and got == bytes(expected)
    assert singles == bad
