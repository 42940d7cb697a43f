from __future__ import annotations

from pathlib import Path

import pytest

from recovery.demo import build_sample_disk
from recovery.disks import fsmap, partitions, usedmap
from tests.helpers import MIB

DOMAIN = """# Domain logfile created by unset_name v0.3.23
# Source: t.img
# Offset: 0x00000000
# current_pos  current_status
0x04000000     ?
#      pos        size  status
0x00000000  0x00448400  +
0x00448400  0x003B8000  ?
0x00800400  0x00040800  +
"""


def test_parse_domain_map() -> None:
    assert usedmap.parse_domain_map(DOMAIN) == [(0, 0x448400), (0x800400, 0x40800)]


def test_align_rounds_outwards_and_clamps() -> None:
    assert usedmap._align_within([(0x400, 10), (5000, 100)], base=MIB, limit=8192) == [(MIB, 4096), (MIB + 4096, 4096)]


def test_merge() -> None:
    assert usedmap.merge([(10, 5), (0, 10), (20, 0), (30, 5), (12, 1)]) == [(0, 15), (30, 5)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("map") / "sample.img"
    build_sample_disk(str(path), 96)
    return path


def test_exact_map_is_everything(sample: Path) -> None:
    m = usedmap.build_map(str(sample), sample.stat().st_size, "exact")
    assert m.extents == [(0, sample.stat().st_size)]
    assert [p.method for p in m.parts] == ["whole", "whole"]


@pytest.mark.root  # partclone reads partitions through loop devices
def test_used_map_skips_free_space_but_keeps_tables(sample: Path) -> None:
    size = sample.stat().st_size
    m = usedmap.build_map(str(sample), size, "used")
    assert [(p.fstype, p.method) for p in m.parts] == [("ext4", "used"), ("vfat", "used")]
    assert m.bytes < size * 3 // 4
    assert m.extents[0][0] == 0  # the protective MBR and the GPT
    last_off, last_len = m.extents[-1]
    assert last_off + last_len == size  # the backup GPT
    assert not m.warnings


def test_swap_needs_only_its_header(tmp_path: Path) -> None:
    img = tmp_path / "swap.img"
    with open(img, "wb") as f:
        f.truncate(32 * MIB)
    import subprocess

    subprocess.run(["mkswap", str(img)], check=True, capture_output=True)
    m = usedmap.build_map(str(img), 32 * MIB, "used")
    assert m.extents == [(0, usedmap.SWAP_HEADER)]


def _image(tmp_path: Path, script: str, mib: int = 64) -> Path:
    import subprocess

    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(mib * MIB)
    subprocess.run(["sfdisk", "--quiet", str(img)], input=script, text=True, check=True)
    return img


def test_table_areas_of_a_gpt_are_the_head_and_the_backup(tmp_path: Path) -> None:
    img = _image(tmp_path, "label: gpt\nstart=4096, size=16MiB\nsize=8MiB\n")
    table = partitions.read_table(str(img))
    assert table is not None
    size = 64 * MIB
    areas = partitions.table_areas(str(img), table, size)
    assert areas[0] == (0, 4096 * 512)  # MBR, GPT and the gap a boot loader may use
    backup_start, backup_len = areas[1]
    assert backup_start + backup_len == size  # the backup header is the last sector
    assert backup_len == 33 * 512  # 128 entries of 128 bytes and the header
    assert len(areas) == 2


def test_table_areas_of_an_mbr_follow_the_ebr_chain(tmp_path: Path) -> None:
    img = _image(
        tmp_path, "label: dos\nsize=8MiB, type=83\ntype=5\nsize=8MiB, type=83\nsize=8MiB, type=82\nsize=4MiB, type=83\n"
    )
    table = partitions.read_table(str(img))
    assert table is not None and len(table.extended) == 1
    areas = partitions.table_areas(str(img), table, 64 * MIB)
    ebrs = areas[1:]
    assert len(ebrs) == 3 and all(n == 512 for _, n in ebrs)
    logical = sorted(p.start for p in table.partitions if p.number >= 5)
    # each EBR lies inside the extended partition, before its logical partition
    for (ebr, _), start in zip(ebrs, logical, strict=True):
        assert table.extended[0][0] <= ebr < start
        with open(img, "rb") as f:
            f.seek(ebr + 510)
            assert f.read(2) == b"\x55\xaa"


def test_used_mode_leaves_out_space_outside_the_partitions(tmp_path: Path) -> None:
    img = _image(tmp_path, "label: gpt\nstart=2048, size=8MiB, type=linux\n")
    m = usedmap.build_map(str(img), 64 * MIB, "used")
    assert m.skipped > 54 * MIB
    assert [(p.method, p.note) for p in m.parts] == [("whole", "no filesystem found")]
    assert abs(m.bytes - (64 * MIB - m.skipped)) < 8192  # the backup GPT, rounded out to 4 KiB


def test_fat_and_ntfs_extras(tmp_path: Path) -> None:
    import subprocess

    fat = tmp_path / "fat.img"
    with open(fat, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(["mkfs.vfat", "-F", "32", str(fat)], check=True, capture_output=True)
    [(start, length)] = fsmap.extras("vfat", str(fat), 64 * MIB)
    assert start == 0 and length > 6 * 512  # the backup boot sector (6) and both FATs
    ntfs = tmp_path / "ntfs.img"
    with open(ntfs, "wb") as f:
        f.truncate(32 * MIB)
    subprocess.run(["mkntfs", "-q", "-F", "-f", str(ntfs)], check=True, capture_output=True)
    extents = fsmap.extras("ntfs", str(ntfs), 32 * MIB)
    assert (32 * MIB - 512, 512) in extents  # the backup boot sector, the last one


@pytest.mark.root  # partclone reads the filesystem through a loop device
def test_unmappable_filesystem_is_copied_whole_in_partclones_words(tmp_path: Path) -> None:
    """partclone.extfs -D fails on ext4 bigalloc: whole copy, and the plan says why."""
    import subprocess

    img = tmp_path / "bigalloc.img"
    with open(img, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "bigalloc", str(img)], check=True, capture_output=True)
    m = usedmap.build_map(str(img), 64 * MIB, "used")
    [part] = m.parts
    assert part.method == "whole" and m.extents == [(0, 64 * MIB)]
    assert part.note and "bitmap error" in part.note and len(part.note) <= usedmap.NOTE_MAX
    assert m.warnings and "bitmap error" in m.warnings[0]
