"""GPT headers, pure: what sfdisk writes decodes and encodes back to the same bytes; the pair that puts the
backup at a larger disk's end passes `sgdisk -v`; a damaged or outsized header is refused."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.disks import gpt
from tests.helpers import MIB, sh

SS = 512


def gpt_image(path: Path, mib: int = 16) -> None:
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    sh("sfdisk", "--quiet", str(path), input="label: gpt\nstart=2048, size=8192, type=linux\nsize=4096, type=linux\n")


def sectors(path: Path, lba: int, count: int = 1) -> bytes:
    with open(path, "rb") as f:
        f.seek(lba * SS)
        return f.read(count * SS)


def put(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_a_header_encodes_back_to_the_bytes_it_came_from(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    gpt_image(disk)
    raw = sectors(disk, 1)
    header = gpt.decode_header(raw)
    assert (header.my_lba, header.alternate_lba, header.entries_lba) == (1, 16 * 2048 - 1, 2)
    assert gpt.encode_header(header, SS) == raw
    gpt.check_entries(header, sectors(disk, 2, 32))
    assert gpt.partitions_end(header, sectors(disk, 2, 32)) == 2048 + 8192 + 4096 - 1


@pytest.mark.skipif(not shutil.which("sgdisk"), reason="needs sgdisk (Debian's gdisk)")
def test_moved_to_the_end_of_a_larger_disk_the_table_is_valid(tmp_path: Path) -> None:
    small, large = tmp_path / "small.img", tmp_path / "large.img"
    gpt_image(small)
    shutil.copy(small, large)
    with open(large, "r+b") as f:
        f.truncate(48 * MIB)
    assert "Identified 1 problems" in sh("sgdisk", "-v", str(large), check=False).stdout  # as a clone leaves it
    disk_sectors = 48 * 2048
    primary = gpt.decode_header(sectors(large, 1))
    entries = sectors(large, primary.entries_lba, primary.entries_sectors(SS))
    moved = gpt.moved_to_end(primary, entries, disk_sectors, SS)
    put(large, moved.backup.entries_lba * SS, entries)
    put(large, (disk_sectors - 1) * SS, gpt.encode_header(moved.backup, SS))
    put(large, SS, gpt.encode_header(moved.primary, SS))
    mbr = gpt.protective_mbr(sectors(large, 0), disk_sectors)
    assert mbr is not None
    put(large, 0, mbr)
    verdict = sh("sgdisk", "-v", str(large)).stdout
    assert "No problems found" in verdict, verdict
    assert moved.primary.last_usable == disk_sectors - 34
    before, after = sh("sfdisk", "--dump", str(small)).stdout, sh("sfdisk", "--dump", str(large)).stdout
    entries_of = [line for line in before.splitlines() if line.startswith("/")]
    assert [line.replace("small", "large") for line in entries_of] == [
        line for line in after.splitlines() if line.startswith("/")
    ]
    assert gpt.protective_mbr(mbr, disk_sectors) is None  # covers the disk already
    # What `recovery verify` takes for the same disk: only the fields the move changes differ.
    head_s, head_l = sectors(small, 0, 2048), sectors(large, 0, 2048)
    assert gpt.moved_copy(head_s, head_l, SS, disk_sectors) == moved
    for at in (SS + 56, 3 * SS, 446 + 4):  # the disk GUID, an entry, the MBR's partition type
        changed = bytearray(head_l)
        changed[at] ^= 1
        assert gpt.moved_copy(head_s, bytes(changed), SS, disk_sectors) is None
    assert gpt.moved_copy(head_l, head_s, SS, 32 * 2048) is None  # a backup moved back, towards the start
    assert gpt.moved_copy(head_s, head_l, SS, disk_sectors + 1) is None  # not this disk's end
    # A header whose fields only point further out, its CRC made right, is not the move of this disk.
    far = gpt.encode_header(dataclasses.replace(moved.primary, alternate_lba=(1 << 64) - 1, last_usable=1 << 63), SS)
    assert gpt.moved_copy(head_s, head_l[:SS] + far + head_l[2 * SS :], SS, disk_sectors) is None


def test_a_damaged_header_or_entry_array_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    gpt_image(disk)
    raw = bytearray(sectors(disk, 1))
    header = gpt.decode_header(bytes(raw))
    flipped = bytearray(raw)
    flipped[40] ^= 1  # first usable LBA
    with pytest.raises(gpt.GptError, match="CRC"):
        gpt.decode_header(bytes(flipped))
    entries = bytearray(sectors(disk, 2, 32))
    entries[200] ^= 1
    with pytest.raises(gpt.GptError, match="entries"):
        gpt.moved_to_end(header, bytes(entries), 64 * 2048, SS)
    with pytest.raises(gpt.GptError, match="no GPT"):
        gpt.decode_header(bytes(SS))


@pytest.mark.parametrize(
    ("count", "size", "header_size"),
    [(1 << 24, 128, 92), (128, 64, 92), (128, 128, 10_000), (128, 130, 92)],
)
def test_a_header_a_peer_made_up_cannot_ask_for_much(count: int, size: int, header_size: int) -> None:
    """Sizes a peer wrote are bounded before anything is read by them (a CRC a peer computes passes)."""
    header = gpt.Header(1 << 16, 92, 1, 100, 34, 60, bytes(16), 2, count, size, 0)
    raw = bytearray(gpt.encode_header(header, SS))
    struct.pack_into("<I", raw, 12, header_size)
    struct.pack_into("<I", raw, 16, 0)
    struct.pack_into("<I", raw, 16, zlib.crc32(bytes(raw[: min(header_size, SS)])))
    with pytest.raises(gpt.GptError):
        gpt.decode_header(bytes(raw))


def test_a_disk_too_small_for_the_backup_at_its_end_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    gpt_image(disk)
    header = gpt.decode_header(sectors(disk, 1))
    with pytest.raises(gpt.GptError, match="too small"):
        gpt.moved_to_end(header, sectors(disk, 2, 32), 2048 + 8192, SS)


def test_a_hybrid_mbr_is_left_as_it_is() -> None:
    mbr = bytearray(512)
    mbr[510:512] = b"\x55\xaa"
    for i, (ptype, start) in enumerate([(0xEE, 1), (0x0C, 2048)]):
        slot = 446 + 16 * i
        mbr[slot + 4] = ptype
        mbr[slot + 8 : slot + 12] = start.to_bytes(4, "little")
        mbr[slot + 12 : slot + 16] = (1000).to_bytes(4, "little")
    assert gpt.protective_mbr(bytes(mbr), 1 << 20) is None


U32 = st.integers(min_value=0, max_value=(1 << 32) - 1)
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
HEADERS = st.builds(
    gpt.Header, U32, st.integers(92, 600), U64, U64, U64, U64, st.binary(min_size=16, max_size=16), U64, U32, U32, U32
)


@settings(max_examples=400, deadline=None)
@given(HEADERS, st.binary(max_size=4096), st.integers(min_value=0, max_value=1 << 40))
def test_any_header_a_peer_wrote_gives_a_move_or_a_gpt_error(header: gpt.Header, entries: bytes, disk: int) -> None:
    """Every field a peer chose, with a CRC it computed: decoded and moved, or refused; never another error."""
    raw = gpt.encode_header(header, SS) if header.header_size <= SS else None
    if raw is None:
        return
    try:
        decoded = gpt.decode_header(raw)
        moved = gpt.moved_to_end(decoded, entries, disk, SS)
    except gpt.GptError:
        return
    assert moved.backup.my_lba == disk - 1 and moved.primary.last_usable < moved.backup.entries_lba
    assert gpt.decode_header(gpt.encode_header(moved.backup, SS)) == moved.backup


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=2 * SS, max_size=2 * SS), st.binary(min_size=2 * SS, max_size=2 * SS))
def test_any_two_heads_compare_without_an_error(source: bytes, target: bytes) -> None:
    found = gpt.moved_copy(source, gpt.SIGNATURE.join([target[:SS], target[SS + 8 :]]), SS, 1 << 20)
    assert found is None or isinstance(found, gpt.Moved)
