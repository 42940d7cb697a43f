"""Images as a damaged disk or a hostile hand leaves them: each a clear ImageError, never a traceback,
never a byte handed out that is not the chunk's."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import blake3
import pytest

from recovery.diskimage import format as f
from recovery.diskimage.reader import BadChunk, ImageReader
from recovery.diskimage.verify import check_image
from recovery.errors import ImageError, RecoveryError, UsageError
from tests.diskimage.helpers import MIB, disk_bytes, write_image


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytearray]:
    disk = disk_bytes(6 * MIB, seed=3)
    write_image(tmp_path / "d.img", disk, manifest={"mode": "exact"})
    return tmp_path / "d.img", disk


def flip(path: Path, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x40]))


def footer_of(path: Path) -> f.Footer:
    raw = path.read_bytes()
    header = f.decode_header(raw[: f.HEADER_SIZE])
    return f.decode_footer(raw[-f.FOOTER_SIZE :], header, len(raw))


def stored_chunk(path: Path) -> f.Entry:
    with ImageReader(str(path)) as img:
        return next(e for e in img.entries() if e.codec is not f.Codec.ZERO and e.stored > 1000)


def test_a_flipped_byte_in_a_chunk_is_named_by_its_offset_and_never_read_out(image: tuple[Path, bytearray]) -> None:
    path, _ = image
    e = stored_chunk(path)
    flip(path, e.position + f.RECORD_SIZE + e.stored // 2)
    with ImageReader(str(path)) as img:  # the index is intact: it opens
        checked = check_image(img)
        assert [b.entry.offset for b in checked.bad] == [e.offset]
        assert f"byte {e.offset}" in checked.bad[0].message
        with pytest.raises(BadChunk):
            img.read(e.offset, 10)


@pytest.mark.parametrize("part", ["index", "manifest", "footer", "header"])
def test_a_flipped_byte_in_the_index_manifest_footer_or_header_refuses_the_image(
    image: tuple[Path, bytearray], part: str
) -> None:
    path, _ = image
    foot = footer_of(path)
    at = {
        "index": foot.index_pos + 70,
        "manifest": foot.manifest_pos + 3,
        "footer": path.stat().st_size - 40,
        "header": 20,
    }[part]
    flip(path, at)
    with pytest.raises(ImageError, match=r"damaged|does not fit|another image|impossible|root"):
        ImageReader(str(path))


@pytest.mark.parametrize("keep", [0, 100, f.HEADER_SIZE + 10, -f.FOOTER_SIZE - 5, -1])
def test_a_truncated_image_is_incomplete_or_damaged(image: tuple[Path, bytearray], keep: int) -> None:
    path, _ = image
    size = path.stat().st_size
    os.truncate(path, keep if keep >= 0 else size + keep)
    with pytest.raises(ImageError):
        ImageReader(str(path))


def test_an_image_of_a_newer_format_says_so(image: tuple[Path, bytearray]) -> None:
    path, _ = image
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, f.INCREMENT_MAJOR + 1)
    raw[f.HEADER_SIZE - 32 : f.HEADER_SIZE] = blake3.blake3(raw[: f.HEADER_SIZE - 32]).digest()
    path.write_bytes(raw)
    with pytest.raises(ImageError, match="newer version"):
        ImageReader(str(path))


def test_a_directory_or_a_link_is_not_an_image(tmp_path: Path, image: tuple[Path, bytearray]) -> None:
    path, _ = image
    with pytest.raises(UsageError, match="not an image file"):
        ImageReader(str(tmp_path))
    (tmp_path / "link.img").symlink_to(path)
    with pytest.raises(UsageError, match="symbolic link"):
        ImageReader(str(tmp_path / "link.img"))
    with pytest.raises(UsageError, match="does not exist"):
        ImageReader(str(tmp_path / "missing.img"))


def test_encrypted_chunks_cannot_be_swapped_or_replayed(tmp_path: Path) -> None:
    disk = bytearray(b"A" * MIB + b"B" * MIB)
    path = tmp_path / "e.img"
    write_image(path, disk, passphrase=b"pw")
    with ImageReader(str(path), b"pw") as img:
        first, second = list(img.entries())
    assert first.stored == second.stored  # same size: the payloads can be swapped in place
    raw = bytearray(path.read_bytes())
    a_at, b_at = first.position + f.RECORD_SIZE, second.position + f.RECORD_SIZE
    a, b = bytes(raw[a_at : a_at + first.stored]), bytes(raw[b_at : b_at + second.stored])
    raw[a_at : a_at + first.stored] = b
    raw[b_at : b_at + second.stored] = a
    path.write_bytes(raw)
    with ImageReader(str(path), b"pw") as img:
        assert {bad.entry.offset for bad in check_image(img).bad} == {0, MIB}


def test_random_damage_is_an_image_error_or_a_named_bad_chunk_never_a_crash(tmp_path: Path) -> None:
    disk = disk_bytes(3 * MIB, seed=9)
    clean = tmp_path / "clean.img"
    write_image(clean, disk, chunk=256 << 10)
    original = clean.read_bytes()
    rng = random.Random(2026)
    target = tmp_path / "fuzz.img"
    for _ in range(300):
        raw = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(raw))
            raw[at] = rng.randrange(256)
        if rng.random() < 0.2:
            del raw[rng.randrange(len(raw)) :]
        target.write_bytes(raw)
        try:
            with ImageReader(str(target)) as img:
                checked = check_image(img, whole=True)
                if not checked.bad:
                    assert img.read(0, len(disk)) == disk  # whatever opened and checked clean is the disk
        except RecoveryError:
            pass
