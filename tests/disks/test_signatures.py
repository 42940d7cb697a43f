"""Signatures in a region of a disk: what blkid sees, what wipefs finds, erasing them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.disks import partdev, partitions, signatures
from recovery.engine.clone import fscheck
from recovery.protocol.messages import MapPart
from tests.helpers import MIB, sh

pytestmark = pytest.mark.root  # wipefs needs a device: a loop device over the region

START, SIZE = 4 * MIB, 120 * MIB


@pytest.fixture
def swap_over_btrfs(tmp_path: Path) -> Path:
    """A region that held Btrfs and got a swap header written over its start,
    as a used-mode copy of a swap partition would leave it."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(START + SIZE)
    region = tmp_path / "region.img"
    with open(region, "wb") as f:
        f.truncate(SIZE)
    sh("mkfs.btrfs", "-q", "-f", str(region))
    swap = tmp_path / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(SIZE)
    sh("mkswap", str(swap))
    data = bytearray(region.read_bytes())
    data[:4096] = swap.read_bytes()[:4096]  # only the swap header is in the map
    with open(img, "r+b") as f:
        f.seek(START)
        f.write(data)
    return img


def test_leftover_signature_makes_blkid_ambivalent_and_the_check_fail(swap_over_btrfs: Path) -> None:
    found = signatures.blkid(str(swap_over_btrfs), START, SIZE)
    assert found == (signatures.AMBIVALENT,)
    with partdev.private_region(str(swap_over_btrfs), START, SIZE) as dev:  # as the receiver checks it
        assert dev is not None
        check = fscheck.check_signature(
            dev, MapPart(number=2, start=START, size=SIZE, fstype="swap", blkid=("TYPE=swap",))
        )
    assert check.ok is False and "ambivalent" in check.message


def test_wipe_regions_erases_every_signature(swap_over_btrfs: Path) -> None:
    fd = os.open(swap_over_btrfs, os.O_RDWR)
    try:

        def zero(offset: int, length: int) -> None:
            os.pwrite(fd, bytes(length), offset)

        erased = signatures.wipe_regions(str(swap_over_btrfs), [(START, SIZE)], zero)
    finally:
        os.close(fd)
    assert any(e.startswith("btrfs") for e in erased) and any(e.startswith("swap") for e in erased)
    assert signatures.blkid(str(swap_over_btrfs), START, SIZE) == ()
    with open(swap_over_btrfs, "rb") as f:  # the Btrfs superblock mirror at 64 MiB went too
        f.seek(START + (64 << 20) + 0x40)
        assert f.read(8) != b"_BHRfS_M"


def test_a_label_with_spaces_and_quotes_is_read_as_it_is(tmp_path: Path) -> None:
    """blkid escapes them with backslashes; what a new filesystem or swap area is given must not hold those."""
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(8 * MIB)
    for label in ('my "disk\\', "Dé $x", "日本"):
        sh("mkfs.ext4", "-q", "-F", "-L", label, str(img))
        assert partitions.probe(str(img)).label == label
