"""Issue 24, first part: a target larger than its source ends with a valid GPT. Real processes over
loopback TCP, loop devices: the 128 MiB GPT sample disk (ext4 + FAT) onto a 160 MiB disk, by a clone
(exact and used) and by a local image restore; `sgdisk -v` finds no problem, the partitions are the
source's, every other byte of the copy is the source's, and the source is never written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recovery.disks import gpt
from tests.helpers import CODE, MIB, Recovery, b3sum, loop_device, receiver, sh

pytestmark = pytest.mark.root
SECTOR = 512
SOURCE = 128 * MIB  # the sample disk (tests/conftest.py)
TARGET = 160 * MIB  # blank_loop


def clone(source: str, target: str, mode: str) -> tuple[Recovery, Recovery]:
    rx, port = receiver(target, "--yes")
    tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}", "--mode", mode)
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    return tx, rx


def partitions(dev: str) -> list[dict[str, object]]:
    table = json.loads(sh("sfdisk", "--json", dev).stdout)["partitiontable"]
    return [{k: v for k, v in p.items() if k != "node"} for p in table["partitions"]]


def read(dev: str, offset: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


def check_moved(source: str, target: str, rx: Recovery) -> None:
    moved = rx.event("gpt_moved")
    assert moved and moved["backup_lba"] == TARGET // SECTOR - 1
    assert moved["last_usable_lba"] == TARGET // SECTOR - 34
    assert moved["free_bytes"] > TARGET - SOURCE  # the new space, and the source's own after its last partition
    verdict = sh("sgdisk", "-v", target).stdout
    assert "No problems found" in verdict, verdict
    assert partitions(target) == partitions(source)
    # The backup at the end holds the primary's entries; only the headers and the protective MBR changed.
    assert read(target, TARGET - 33 * SECTOR, 32 * SECTOR) == read(source, 2 * SECTOR, 32 * SECTOR)


@pytest.mark.parametrize("mode", ["exact", "used"])
def test_a_clone_onto_a_larger_disk_moves_the_gpt_backup_to_its_end(
    source_loop: str, blank_loop: str, mode: str
) -> None:
    before = b3sum(source_loop)
    tx, rx = clone(source_loop, blank_loop, mode)
    assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
    check_moved(source_loop, blank_loop, rx)
    assert b3sum(source_loop) == before  # the source is never written
    if mode == "exact":
        # Every byte past the two header sectors is the source's (its old backup included, now unused),
        # and `recovery verify` says the target holds the source, but for the GPT it moved.
        assert read(blank_loop, 2 * SECTOR, SOURCE - 2 * SECTOR) == read(source_loop, 2 * SECTOR, SOURCE - 2 * SECTOR)
        check = Recovery("verify", source_loop, blank_loop)
        assert check.wait() == 0, check.stderr
        said = check.event("verify")
        assert said and said["gpt_moved"] is True and said["identical"] is False and said["differences"] == []
    with loop_device(blank_loop) as target:
        sh("e2fsck", "-f", "-n", f"{target}p1")
        sh("fsck.fat", "-n", f"{target}p2")


def test_a_target_of_the_source_size_is_its_copy_byte_for_byte(source_loop: str, tmp_path: Path) -> None:
    image = tmp_path / "same.img"
    with open(image, "wb") as f:
        f.truncate(SOURCE)
    with loop_device(image, partitions=False) as target:
        _, rx = clone(source_loop, target, "exact")
        assert rx.event("gpt_moved") is None
        assert b3sum(target) == b3sum(source_loop)


def test_an_image_restored_onto_a_larger_disk_moves_the_gpt_backup_too(
    source_loop: str, blank_loop: str, tmp_path: Path
) -> None:
    image = tmp_path / "disk.u4img"
    save = Recovery("image", "save", "--source", source_loop, "--output", str(image))
    assert save.wait() == 0, save.stderr
    restore = Recovery("image", "restore", str(image), "--target", blank_loop, "--yes")
    assert restore.wait() == 0, restore.stderr
    check_moved(source_loop, blank_loop, restore)


def test_a_gpt_header_that_points_outside_the_copy_is_left_as_it_is(tmp_path: Path) -> None:
    """A peer's made-up header (its CRC right, its entries at an absurd sector): a warning, never a crash,
    and the target holds exactly what was sent."""
    source, target_file = tmp_path / "source.img", tmp_path / "target.img"
    header = gpt.Header(1 << 16, 92, 1, 16 * 2048 - 1, 34, 16 * 2048 - 34, bytes(16), 1 << 60, 128, 128, 0)
    with open(source, "wb") as f:
        f.truncate(16 * MIB)
        f.seek(SECTOR)
        f.write(gpt.encode_header(header, SECTOR))
    with open(target_file, "wb") as f:
        f.truncate(32 * MIB)
    with loop_device(source, partitions=False) as src, loop_device(target_file, partitions=False) as dst:
        _, rx = clone(src, dst, "exact")
        assert rx.event("gpt_moved") is None
        warnings = [e["message"] for e in rx.events if e["event"] == "warning"]
        assert any("left as the source had it" in w for w in warnings), warnings
        assert read(dst, 0, 16 * MIB) == source.read_bytes()


def test_a_target_barely_larger_keeps_the_copy_whole(source_loop: str, tmp_path: Path) -> None:
    """8 KiB larger: a backup of its own would need its 16 KiB of entries over the copy's last sectors.
    The GPT is left as the source had it, with a warning, and the copy is the source's, byte for byte."""
    image = tmp_path / "barely.img"
    with open(image, "wb") as f:
        f.truncate(SOURCE + 8192)
    with loop_device(image, partitions=False) as target:
        _, rx = clone(source_loop, target, "exact")
        assert rx.event("gpt_moved") is None
        warnings = [e["message"] for e in rx.events if e["event"] == "warning"]
        assert any("too little larger" in w for w in warnings), warnings
        assert read(target, 0, SOURCE) == read(source_loop, 0, SOURCE)
