"""Write an image, read it back: any byte, every chunk checked, the root equal to a clone's list digest."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from recovery.diskimage.reader import ImageReader
from recovery.engine.clone.framelist import FrameList
from recovery.errors import ImageError, PassphraseError
from recovery.protocol.frames import Kind
from tests.diskimage.helpers import MIB, disk_bytes, write_image


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_any_range_reads_back_as_the_disk(tmp_path: Path, passphrase: bytes | None) -> None:
    disk = disk_bytes(9 * MIB + 4096 * 3)
    write_image(tmp_path / "d.img", disk, passphrase=passphrase)
    rng = random.Random(7)
    with ImageReader(str(tmp_path / "d.img"), passphrase) as image:
        assert image.size == len(disk)
        for _ in range(200):
            off = rng.randrange(len(disk))
            n = rng.randrange(min(3 * MIB, len(disk) - off) + 1)
            assert image.read(off, n) == disk[off : off + n]
        assert image.read(0, len(disk)) == disk


def test_the_root_is_the_list_digest_a_clone_of_the_same_chunks_announces(tmp_path: Path) -> None:
    disk = disk_bytes(5 * MIB)
    writer = write_image(tmp_path / "d.img", disk)
    frames = FrameList()
    with ImageReader(str(tmp_path / "d.img")) as image:
        for e in image.entries():
            frames.append(e.offset, e.length, e.digest, Kind.ZERO if e.codec == 2 else Kind.DATA)
        assert image.root.hex() == frames.list_digest() == writer.root().hex()


def test_only_what_the_map_holds_is_stored_and_the_rest_reads_zero(tmp_path: Path) -> None:
    disk = disk_bytes(8 * MIB)
    extents = [(0, 4096), (3 * MIB + 512, 100_000), (7 * MIB, MIB)]
    write_image(tmp_path / "d.img", disk, extents=extents)
    expected = bytearray(len(disk))
    for off, n in extents:
        expected[off : off + n] = disk[off : off + n]
    with ImageReader(str(tmp_path / "d.img")) as image:
        assert image.read(0, len(disk)) == expected
        assert [(e.offset, e.length) for e in image.entries()] == [(0, 4096), (3 * MIB + 512, 100_000), (7 * MIB, MIB)]
    assert (tmp_path / "d.img").stat().st_size < MIB + 200_000


def test_a_wrong_or_missing_passphrase_is_refused_before_anything_else(tmp_path: Path) -> None:
    write_image(tmp_path / "d.img", disk_bytes(2 * MIB), passphrase=b"right")
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        ImageReader(str(tmp_path / "d.img"), b"wrong")
    with pytest.raises(PassphraseError, match="encrypted"):
        ImageReader(str(tmp_path / "d.img"))


def test_an_unfinished_image_says_so(tmp_path: Path) -> None:
    write_image(tmp_path / "d.img", disk_bytes(3 * MIB), finish=False)
    with pytest.raises(ImageError, match="incomplete"):
        ImageReader(str(tmp_path / "d.img"))
