"""Issue 24, "Boots": a Linux system disk (an EFI system partition with systemd-boot, the kernel and its
initramfs; an ext4 root; Debian bookworm; booting by UUID, the ESP mounted by /etc/fstab by its UUID)
cloned with `--fit shrink` onto a disk two thirds its size and with `--fit grow` onto one twice its size,
then each target booted in QEMU (OVMF, TCG) to its login prompt on the serial console, without systemd
falling back to its emergency shell.

The disk is made by tests/image/linux_disk.sh into out/linux-system.img (or $USB4_RECOVERY_LINUX_DISK)
when missing, which needs mmdebstrap and a Debian mirror (a few minutes). The targets are attached as USB
disks (the VM helper's boot drive), as a replacement disk in an enclosure would be."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CODE, MIB, Recovery, b3sum, loop_device, receiver, sh

from .conftest import REPO, built
from .vm import VM

pytestmark = [pytest.mark.slow, pytest.mark.vm, pytest.mark.root]

SOURCE_MIB = 3072
BOOT_TIMEOUT = 600  # TCG, two guests at once on two cores
LOGIN = r"fitted login: "
BROKEN = ("emergency mode", "Give root password for maintenance", "Failed to mount", "ALERT!")


@pytest.fixture(scope="session")
def linux_disk() -> Path:
    path = Path(os.environ.get("USB4_RECOVERY_LINUX_DISK", REPO / "out" / "linux-system.img"))
    script = Path(__file__).with_name("linux_disk.sh")
    return built(path, ["bash", str(script), str(path), str(SOURCE_MIB)], "tests/image/linux_disk.sh")


@pytest.fixture
def source(linux_disk: Path, tmp_path: Path) -> Iterator[str]:
    copy = tmp_path / "source.img"
    sh("cp", "--sparse=always", str(linux_disk), str(copy))
    with loop_device(copy, partitions=False) as dev:
        yield dev


def fitted(source: str, target: Path, fit: str) -> list[dict[str, object]]:
    """The source cloned onto ``target`` (a file, through a loop device) with ``--fit``; its plan's parts."""
    with loop_device(target, partitions=False) as dev:
        rx, port = receiver(dev, "--yes")
        tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}", "--fit", fit)
        assert (tx.wait(), rx.wait()) == (0, 0), (tx.stderr, rx.stderr)
        assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
        assert "No problems found" in sh("sgdisk", "-v", dev).stdout
    planned = tx.event("fit_planned")
    assert planned is not None
    return planned["parts"]  # type: ignore[no-any-return]


def root_size(disk: Path) -> int:
    """The root partition's size, as the table says."""
    parts = json.loads(sh("sfdisk", "--json", str(disk)).stdout)["partitiontable"]["partitions"]
    return int(parts[1]["size"]) * 512


def test_a_linux_system_shrunk_and_grown_boots(source: str, tmp_path: Path) -> None:
    before = b3sum(source)
    targets = {
        "shrunk": (tmp_path / "shrunk.img", SOURCE_MIB * 2 // 3),
        "grown": (tmp_path / "grown.img", 2 * SOURCE_MIB),
    }
    for name, (path, mib) in targets.items():
        with open(path, "wb") as f:
            f.truncate(mib * MIB)
        esp, root = fitted(source, path, "shrink" if name == "shrunk" else "grow")
        assert esp["method"] == "keep" and root["method"] == "resize", (esp, root)
    assert b3sum(source) == before
    shrunk, grown = (root_size(path) for path, _ in targets.values())
    assert shrunk < SOURCE_MIB * MIB * 2 // 3 < SOURCE_MIB * MIB < grown
    machines = [VM(name, path, tmp_path / "vm", None, memory_mib=768) for name, (path, _) in targets.items()]
    try:
        for vm in machines:
            vm.expect(LOGIN, BOOT_TIMEOUT)
            said = vm.output
            assert not [b for b in BROKEN if b in said], vm.tail()
    finally:
        for vm in machines:
            vm.close()
