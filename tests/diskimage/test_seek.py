"""SEEK_DATA and SEEK_HOLE from an image's index (what the served disk answers qemu-img, cp and bmaptool):
right for any index, a few index pages read whatever the disk's size, and an index page changed after the
image was opened is an error, never an answer that skips data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import blake3
import pytest
import zstandard

from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader
from recovery.diskimage.writer import ImageWriter, new_header, stored_form
from recovery.errors import ImageError

CHUNK = 4096


def make(path: Path, size: int, kinds: list[str]) -> None:
    """An image of ``size`` bytes, chunk by chunk: "data", "zero" (a zero chunk's entry) or "hole" (none)."""
    header, sealer = new_header(size, CHUNK, 512, None)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    writer = ImageWriter(fd, str(path), header, sealer)
    writer.start({"made by": "tests"})
    cctx = zstandard.ZstdCompressor(level=1)
    for i, kind in enumerate(kinds):
        at, n = i * CHUNK, min(CHUNK, size - i * CHUNK)
        if kind == "zero":
            writer.zero(at, n)
        elif kind == "data":
            data = random.Random(i).randbytes(n)
            codec, stored = stored_form(cctx, header, sealer, at, data)
            writer.put(at, n, blake3.blake3(data).digest(), codec, stored)
    writer.finish({"format": "usb4-recovery image", "version": f"{f.MAJOR}.{f.MINOR}"})
    writer.close()
    os.close(fd)


def expected(entries: list[f.Entry], at: int, size: int) -> tuple[int | None, int]:
    """SEEK_DATA and SEEK_HOLE at ``at``, entry by entry."""
    data = next((max(at, e.offset) for e in entries if e.end > at and e.codec is not f.Codec.ZERO), None)
    hole = at
    for e in entries:
        if e.end <= hole:
            continue
        if e.offset > hole or e.codec is f.Codec.ZERO:
            break
        hole = e.end
    return data, min(hole, size)


@pytest.mark.parametrize("seed", range(12))
def test_seek_answers_as_the_entries_say(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randrange(1, 40 * f.PAGE_ENTRIES)
    runs = []  # runs of one kind, so pages of all data, all zeros and all holes come up
    while len(runs) < count:
        runs += [rng.choice(["data", "zero", "hole"])] * rng.choice([1, 3, f.PAGE_ENTRIES, 5 * f.PAGE_ENTRIES])
    size = count * CHUNK - rng.randrange(CHUNK)  # a short last chunk
    make(tmp_path / "i.img", size, runs[:count])
    with ImageReader(str(tmp_path / "i.img")) as image:
        entries = list(image.entries())
        for at in sorted({0, size - 1, *(rng.randrange(size) for _ in range(300))}):
            assert (image.next_data(at), image.next_hole(at)) == expected(entries, at, size), at


def test_a_few_index_pages_are_read_whatever_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long run of zero chunks (an exact image of an empty disk) or of data: each answer reads at most
    three pages of the index, where reading entry by entry made an export quadratic in the disk's size."""
    pages = 200
    kinds = ["data"] + ["zero"] * (pages * f.PAGE_ENTRIES) + ["data"] * (pages * f.PAGE_ENTRIES) + ["zero"]
    size = len(kinds) * CHUNK
    make(tmp_path / "i.img", size, kinds)
    with ImageReader(str(tmp_path / "i.img")) as image:
        reads: list[str] = []
        pread = image._pread
        monkeypatch.setattr(image, "_pread", lambda n, at, what: reads.append(what) or pread(n, at, what))
        first_data = (pages * f.PAGE_ENTRIES + 1) * CHUNK
        assert image.next_data(CHUNK) == first_data
        assert image.next_hole(first_data) == size - CHUNK
        assert image.next_hole(first_data + CHUNK * 7) == size - CHUNK
        assert reads.count("the index") <= 3 + 3 + 3


def test_an_index_page_changed_after_opening_is_an_error(tmp_path: Path) -> None:
    """The image's file changed under the reader (a network folder, another program): a page read again
    whose digest is not the one read when the image was opened is refused, never believed."""
    kinds = ["data"] * (80 * f.PAGE_ENTRIES)
    make(tmp_path / "i.img", len(kinds) * CHUNK, kinds)
    with ImageReader(str(tmp_path / "i.img")) as image:
        at = image.footer.index_pos + 2  # inside the first entry of page 0
        with open(tmp_path / "i.img", "r+b") as fh:
            fh.seek(at)
            byte = fh.read(1)
            fh.seek(at)
            fh.write(bytes([byte[0] ^ 0xFF]))
        image._pages.clear()  # what the cache's eviction does past its pages
        with pytest.raises(ImageError, match="page 0 of the image's index changed"):
            image.next_data(0)
