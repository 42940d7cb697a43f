from __future__ import annotations

from pathlib import Path

import pytest

from recovery.demo import build_sample_disk
from recovery.disks import usedmap
from tests.helpers import MIB, is_root

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
    assert usedmap._align_within([(0x400, 10), (5000, 100)], base=MIB, limit=8192) == [
        (MIB, 4096), (MIB + 4096, 4096)]


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


@pytest.mark.skipif(not is_root(), reason="partclone reads partitions through loop devices")
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
