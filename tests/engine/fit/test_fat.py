"""FAT16 and FAT32 resized by fatresize, each kept its type: the smallest size measured holds FAT32's least
clusters at its cluster size (checked against real mkfs.vfat filesystems), fatresize's own conversion to
FAT16 below it is refused, a FAT16 grows only as far as it stays one; label, serial and first sector kept."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.engine.fit import fat, resize
from recovery.errors import RefusedError
from tests.fsdisks import MTOOLS
from tests.helpers import MIB, loop_device, sh

pytestmark = pytest.mark.root


def fat_image(tmp_path: Path, mib: int, *args: str, fs_mib: int | None = None) -> Path:
    """An image of ``mib`` MiB whose first ``fs_mib`` MiB hold a FAT made by mkfs.vfat ``args``, with a file."""
    image = tmp_path / f"fat-{mib}-{'-'.join(args)}.img"
    with open(image, "wb") as f:
        f.truncate(mib * MIB)
    sh("mkfs.vfat", "-n", "FITFAT", "-h", "2048", *args, str(image), str((fs_mib or mib) * 1024))
    (tmp_path / "file").write_bytes(os.urandom(3 * MIB))
    sh("mcopy", "-i", str(image), str(tmp_path / "file"), "::/file", env=MTOOLS)
    return image


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[str]:
    image = fat_image(tmp_path, 600, "-F", "32", "-s", "8")
    with loop_device(image, partitions=False) as d:
        yield d


def ids(dev: str) -> tuple[bytes, str]:
    """The boot sector's first sector, serial and label fields, and what blkid says of it."""
    boot = fat._boot(dev)
    fields = boot[0x1C:0x20] + (boot[0x43:0x52] if fat.parse_bpb(boot).fat32 else boot[0x27:0x36])
    return fields, sh("blkid", "-p", "-o", "export", "-s", "UUID", "-s", "LABEL", "-s", "VERSION", dev).stdout


@pytest.mark.parametrize("per_cluster", [1, 2, 8, 16])
def test_the_smallest_fat32_mkfs_makes_at_that_size_is_still_fat32(tmp_path: Path, per_cluster: int) -> None:
    source = fat_image(tmp_path, 700, "-F", "32", "-s", str(per_cluster))
    bpb = fat.read_bpb(str(source))
    assert bpb.fat32 and bpb.bits == 32 and bpb.per_cluster == per_cluster
    least = fat.smallest(bpb, used_clusters=10)
    small = tmp_path / "small.img"
    with open(small, "wb") as f:
        f.truncate(least)
    sh("mkfs.vfat", "-F", "32", "-s", str(per_cluster), "-R", str(bpb.reserved), str(small))
    made = fat.read_bpb(str(small))
    assert made.fat32 and fat.FAT32_LEAST <= made.clusters <= fat.FAT32_LEAST + 2 * fat.ROOM + fat.FUZZ // made.cluster
    assert fat.smallest(bpb, used_clusters=100_000) == bpb.size_for(100_000 + fat.ROOM) + fat.FUZZ


def test_fatresize_to_the_smallest_keeps_fat32_and_below_it_is_refused(dev: str, tmp_path: Path) -> None:
    before = ids(dev)
    low, used = resize.measure(dev, "vfat", 1)
    assert low is not None and used >= 3 * MIB and low >= fat.read_bpb(dev).size_for(fat.FAT32_LEAST)
    resize.shrink(dev, "vfat", low)
    after = fat.read_bpb(dev)
    assert after.fat32 and after.clusters >= fat.FAT32_LEAST and after.size <= low
    assert ids(dev) == before
    sh("fsck.vfat", "-n", dev)
    sh("mcopy", "-n", "-i", dev, "::/file", str(tmp_path / "back"), env=MTOOLS)
    assert (tmp_path / "back").read_bytes() == (tmp_path / "file").read_bytes()
    with pytest.raises(RefusedError, match="made a FAT32 a FAT16"):  # what fatresize -f does below it
        fat.resize(dev, low - 64 * MIB)


def test_a_fat16_grows_only_as_far_as_it_stays_fat16(tmp_path: Path) -> None:
    image = fat_image(tmp_path, 1600, "-F", "16", "-s", "32", fs_mib=300)
    with loop_device(image, partitions=False) as d:
        before = ids(d)
        bpb = fat.read_bpb(d)
        resize.grow(d, "vfat")
        after = fat.read_bpb(d)
        assert not after.fat32 and after.bits == 16 and after.size > bpb.size
        assert after.size <= (fat.largest(bpb) or 0) and after.clusters <= fat.FAT16_MOST
        resize.grow(d, "vfat")  # as large as it stays a FAT16: left as it is, never shrunk
        assert fat.read_bpb(d) == after
        assert ids(d) == before
        sh("fsck.vfat", "-n", d)


def test_a_fat16_shrinks_and_stays_fat16(tmp_path: Path) -> None:
    """libparted makes a FAT16's clusters smaller to shrink it, down to its own smallest (which the one
    measured is over, fatresize's rounding and all): it stays a FAT16, its files and ids kept."""
    image = fat_image(tmp_path, 100, "-F", "16", "-s", "4")
    with loop_device(image, partitions=False) as d:
        before = ids(d)
        low, _ = resize.measure(d, "vfat", 1)
        assert low is not None and low < 50 * MIB
        resize.shrink(d, "vfat", low)
        after = fat.read_bpb(d)
        assert not after.fat32 and after.bits == 16 and after.size <= low
        assert ids(d) == before
        sh("fsck.vfat", "-n", d)
        sh("mcopy", "-n", "-i", d, "::/file", str(tmp_path / "back"), env=MTOOLS)
        assert (tmp_path / "back").read_bytes() == (tmp_path / "file").read_bytes()


def test_a_dirty_fat_is_refused_and_a_fat12_or_a_small_fat32_kept(tmp_path: Path, dev: str) -> None:
    bpb = fat.read_bpb(dev)
    with open(dev, "r+b") as f:  # the second FAT differs from the first
        f.seek((bpb.reserved + bpb.fat_size) * bpb.sector + 4096)
        f.write(b"\xff" * 64)
    with pytest.raises(RefusedError, match=r"partition 3 \(vfat\) is not clean"):
        resize.measure(dev, "vfat", 3)
    tiny = fat_image(tmp_path, 8, "-F", "12")
    with pytest.raises(RefusedError, match="FAT12 is kept at its size"):
        resize.measure(str(tiny), "vfat", 1)
    odd = tmp_path / "odd.img"
    with open(odd, "wb") as f:
        f.truncate(40 * MIB)
    sh("mkfs.vfat", "-F", "32", "-s", "8", str(odd))  # it warns: too few clusters for a FAT32
    with pytest.raises(RefusedError, match=r"a FAT32 of \d+ clusters \(under FAT32.s 65525\) is kept at its size"):
        resize.measure(str(odd), "vfat", 1)


def test_fatresize_info_is_read_through_libparteds_noise() -> None:
    said = (
        "sh: 1: udevadm: not found\nfatresize 1.1.0 (20221231)\nCould not get geometry of device (Inappropriate "
        "ioctl for device)part(start=0, end=1228799, length=1228800)\nFAT: fat32\nCur size: 629121024\n"
        "Could not get geometry of device (Inappropriate ioctl for device)Min size: 33714688\nMax size: 629145600\n"
    )
    assert fat._number(said, "Min size") == 33714688
    assert fat._number(said, "Cur size") == 629121024
    with pytest.raises(RefusedError, match="Min size"):
        fat._number("Could not get geometry of device", "Min size")


def test_a_stale_free_cluster_count_is_not_a_dirty_fat(dev: str) -> None:
    """The review's finding: FSInfo's free count is advisory (Windows and firmware leave it stale) and
    fsck.fat -n exits 1 on it alone; such a FAT was kept at its size with "run chkdsk"."""
    boot = fat._boot(dev)
    at = int.from_bytes(boot[0x30:0x32], "little") * 512 + 488
    with open(dev, "r+b") as f:
        f.seek(at)
        f.write((1000).to_bytes(4, "little"))
    assert "Free cluster summary wrong" in sh("fsck.vfat", "-n", dev, check=False).stdout
    low, used = fat.measure(dev, 1)
    assert low is not None and used >= 3 * MIB
    fat.resize(dev, low + 4 * fat.FUZZ)
    assert sh("fsck.vfat", "-n", dev, check=False).returncode == 0  # fatresize wrote the count again


def test_a_boot_sector_that_lies_is_kept_at_its_size(tmp_path: Path) -> None:
    """Found crafting boot sectors: fatresize crashed on some (SIGSEGV, SIGABRT) where fsck.fat happened to
    refuse first. A FAT larger than its partition, or a FAT16 boot sector with FAT32's count of clusters, is
    refused before any tool reads it."""
    image = fat_image(tmp_path, 64, "-F", "16")
    with loop_device(image, partitions=False) as d:
        boot = bytearray(fat._boot(d))
        boot[0x13:0x15] = (0).to_bytes(2, "little")
        boot[0x20:0x24] = (4 << 21).to_bytes(4, "little")  # 4 GiB of sectors on 64 MiB
        with open(d, "r+b") as f:
            f.write(boot)
        with pytest.raises(RefusedError, match="larger than its partition"):
            fat.measure(d, 1)
    image = fat_image(tmp_path, 64, "-F", "16", "-s", "4")
    with loop_device(image, partitions=False) as d:
        boot = bytearray(fat._boot(d))
        boot[0x0D] = 1  # one sector per cluster: FAT32's count of clusters in a FAT16 boot sector
        with open(d, "r+b") as f:
            f.write(boot)
        assert fat._kind(fat.read_bpb(d)) == "FAT32 by its clusters, in a FAT16 boot sector"
        with pytest.raises(RefusedError, match=r"a FAT16 of .* clusters .* is kept at its size"):
            fat.measure(d, 1)


@pytest.mark.parametrize("gib, least", [(1, 256), (10, 512), (20, 1024), (100, 2048)])
def test_the_wizards_estimate_counts_the_default_clusters_of_its_size(gib: int, least: int) -> None:
    """The review's finding: the estimate assumed 4 KiB clusters; Windows and mkfs.fat give larger ones on
    larger volumes, so a FAT32 of 100 GiB cannot go below 2 GiB."""
    assert fat.estimate(gib << 30, 1 << 20) >= least * MIB - 2 * MIB
