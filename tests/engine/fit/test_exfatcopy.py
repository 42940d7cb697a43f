"""exFAT's file-level copy, its parts on real exFAT filesystems (mkfs.exfat, mounted by the kernel where it
has the driver, else exfat-fuse): the boot sector's facts, the source measured in whole clusters, a dirty or
damaged one refused, the new one made with the old one's UUID, label and cluster size, and the comparison
that leaves out what exFAT does not store."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.engine.fit import filecopy, mounts, resize, sametree
from recovery.errors import RefusedError
from tests.helpers import MIB, b3sum, fit_mounts, loop_device, sh

pytestmark = pytest.mark.root
CLUSTER = 4096


def exfat_image(path: Path, mib: int, label: str = "Dätä 1") -> Path:
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    sh("mkfs.exfat", "-c", str(CLUSTER), "-L", label, str(path))
    sh("tune.exfat", "-I", "0x1234abcd", str(path))
    return path


@pytest.fixture
def exfat(tmp_path: Path) -> Iterator[str]:
    """A 32 MiB exFAT of 4 KiB clusters, on a loop device, holding files of known sizes."""
    with loop_device(exfat_image(tmp_path / "x.img", 32), partitions=False) as dev:
        with mounts.mounted(dev, "exfat", writable=True) as where:
            root = Path(where)
            (root / "a" / "b").mkdir(parents=True)
            (root / "a" / "one").write_bytes(b"1")  # one cluster
            (root / "a" / "b" / "café").write_bytes(bytes(5000))  # two
            (root / "empty").write_bytes(b"")  # none
        yield dev


def test_the_boot_sector_tells_cluster_serial_and_the_dirty_flag(tmp_path: Path) -> None:
    image = exfat_image(tmp_path / "x.img", 16)
    boot = filecopy.exfat_boot(str(image))
    assert (boot.cluster, boot.sector, boot.serial, boot.dirty) == (CLUSTER, 512, 0x1234ABCD, False)
    with open(image, "r+b") as f:
        f.seek(106)
        f.write(b"\x02")  # VolumeFlags: VolumeDirty, as a machine that stopped while it was mounted leaves it
    assert filecopy.exfat_boot(str(image)).dirty


def test_its_files_are_measured_in_whole_clusters_read_only(exfat: str) -> None:
    before, views = b3sum(exfat), fit_mounts()
    with mounts.mounted(exfat, "exfat", writable=False) as where:
        # 1 + 2 + 0 clusters of files, the folders a and a/b and the top folder one each
        assert sametree.allocated(where, CLUSTER) == (1 + 2 + 0 + 3) * CLUSTER
    used = filecopy.used_bytes(exfat, "exfat")
    assert used >= (1 + 2 + 3) * CLUSTER
    assert filecopy.smallest(used, "exfat") == max(16 * MIB, used + used // 10 + 16 * MIB)
    low, counted = resize.measure(exfat, "exfat", 2)
    assert counted == used and low == filecopy.smallest(used, "exfat")
    assert b3sum(exfat) == before
    assert fit_mounts() == views


def test_a_dirty_or_damaged_exfat_is_refused_never_repaired(exfat: str) -> None:
    with open(exfat, "r+b") as f:
        f.seek(106)
        f.write(b"\x02")
    before = b3sum(exfat)
    with pytest.raises(RefusedError, match=r"partition 2 \(exfat\) is not clean .*volume-dirty flag is set"):
        resize.measure(exfat, "exfat", 2)
    with open(exfat, "r+b") as f:
        f.seek(106)
        f.write(b"\x00")
        boot = filecopy.exfat_boot(exfat)
        f.seek(boot.heap + (boot.root - 2) * boot.cluster)
        f.write(bytes(256))  # the root folder's first entries: its bitmap's and up-case table's
    before = b3sum(exfat)
    with pytest.raises(RefusedError, match=r"partition 2 \(exfat\) is not clean \(fsck.exfat -n"):
        resize.measure(exfat, "exfat", 2)
    assert b3sum(exfat) == before


def test_the_new_exfat_gets_the_old_ones_uuid_label_and_cluster_size(exfat: str, tmp_path: Path) -> None:
    new_image = tmp_path / "new.img"
    with open(new_image, "wb") as f:
        f.truncate(20 * MIB)
    with loop_device(new_image, partitions=False) as new:
        filecopy.make_like(exfat, new, "exfat", os.statvfs("/"))
        for key in ("UUID", "LABEL", "TYPE"):
            assert (
                sh("blkid", "-p", "-s", key, "-o", "value", new).stdout
                == sh("blkid", "-p", "-s", key, "-o", "value", exfat).stdout
            )
        assert filecopy.exfat_boot(new).cluster == CLUSTER
        sh("fsck.exfat", "-n", new)


def test_a_copy_onto_exfat_is_compared_by_what_it_stores(exfat: str, tmp_path: Path) -> None:
    """The top folder's times and owners are the mount's: not compared; a file's time, mode or contents
    are."""
    new_image = tmp_path / "new.img"
    with open(new_image, "wb") as f:
        f.truncate(20 * MIB)
    with loop_device(new_image, partitions=False) as new:
        filecopy.copy(exfat, new, "exfat", threading.Event())
        with mounts.mounted(exfat, "exfat", writable=False) as old, mounts.mounted(new, "exfat", writable=True) as dst:
            assert sametree.compare(old, dst, posix=False) == 6
            os.utime(Path(dst) / "a" / "b" / "café", (10**9, 10**9))
            with pytest.raises(sametree.Difference, match="a/b/café: its modification time differs"):
                sametree.compare(old, dst, posix=False)


def test_a_moved_exfat_names_its_new_first_sector_with_a_valid_checksum(tmp_path: Path) -> None:
    """exFAT's PartitionOffset (mkfs.exfat on a partition sets it) named the old start after a move. Both boot
    regions now get the new one and their checksums again: fsck.exfat checks them."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
    sh("sfdisk", "-q", str(image), input="label: gpt\nstart=2048, size=100000\n")
    with loop_device(image) as dev:
        part = f"{dev}p1"
        sh("mkfs.exfat", part)

        def offsets() -> list[int]:
            with open(part, "rb") as fh:
                data = fh.read(24 * 512)
            return [int.from_bytes(data[at + 64 : at + 72], "little") for at in (0, 12 * 512)]

        assert offsets() == [2048, 2048]
        assert resize.set_hidden_sectors(part, "exfat", 4096)
        assert offsets() == [4096, 4096]
        assert sh("fsck.exfat", "-n", part, check=False).returncode == 0
        with open(part, "r+b") as fh:  # the checksum is what fsck.exfat checks: a stale one fails it
            fh.seek(64)
            fh.write((8192).to_bytes(8, "little"))
        assert sh("fsck.exfat", "-n", part, check=False).returncode != 0
