"""`recovery image export`: the image's disk as other tools take it, checked with those tools themselves
(bmaptool copy, qemu-img), and nothing left under the asked name when a chunk is damaged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import blake3
import pytest

from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader
from recovery.errors import ImageError, RefusedError
from tests.diskimage.helpers import MIB, disk_bytes, write_image, write_pieces
from tests.diskimage.test_bad_input import flip
from tests.helpers import Recovery, b3sum, sh

SIZE = 12 * MIB
CHUNK = 256 << 10


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, bytearray]:
    """An image holding most of a disk: chunks with zero blocks inside them, zero chunks, and two
    stretches no chunk holds (a used-mode save's free space: zeros on the disk it restores)."""
    disk = disk_bytes(SIZE, seed=11)
    extents = [(0, 5 * MIB), (6 * MIB + CHUNK // 2, 3 * MIB), (10 * MIB, SIZE - 10 * MIB)]
    held = bytearray(SIZE)
    for off, n in extents:
        held[off : off + n] = disk[off : off + n]
    write_image(tmp_path / "d.img", disk, chunk=CHUNK, extents=extents)
    return tmp_path / "d.img", held


def export(image: Path, out: Path, *extra: str) -> Recovery:
    r = Recovery("image", "export", str(image), "--output", str(out), *extra)
    r.wait()
    return r


def test_raw_is_sparse_and_bmaptool_copies_it_checking_every_range(saved: tuple[Path, bytearray], tmp_path: Path):
    image, disk = saved
    out = tmp_path / "disk.raw"
    r = export(image, out)
    assert r.proc.returncode == 0, r.stderr
    done = r.event("image_export")
    assert done["format"] == "raw" and done["bmap"] == f"{out}.bmap"
    assert b3sum(str(out)) == blake3.blake3(disk).hexdigest()
    assert out.stat().st_size == SIZE
    nonzero = sum(1 for at in range(0, SIZE, 4096) if disk[at : at + 4096] != bytes(4096))
    assert done["data_bytes"] == nonzero * 4096  # only blocks with data were written: the rest are holes
    assert done["file_bytes"] < SIZE * 3 // 4

    copy = tmp_path / "copy.raw"
    copy.write_bytes(bytes(SIZE))
    sh("bmaptool", "copy", "--bmap", f"{out}.bmap", str(out), str(copy))
    assert copy.read_bytes() == disk

    flip(out, 4 * MIB + 100)  # a range the map lists: bmaptool's own check must catch it
    assert sh("bmaptool", "copy", "--bmap", f"{out}.bmap", str(out), str(copy), check=False).returncode != 0


@pytest.mark.parametrize("fmt", ["qcow2", "vhdx"])
def test_qcow2_and_vhdx_hold_the_same_disk_for_qemu(saved: tuple[Path, bytearray], tmp_path: Path, fmt: str):
    image, disk = saved
    out = tmp_path / f"disk.{fmt}"
    r = export(image, out, "--format", fmt)
    assert r.proc.returncode == 0, r.stderr
    assert r.event("image_export")["bmap"] is None
    info = sh("qemu-img", "info", "--output=json", str(out)).stdout
    assert f'"format": "{fmt}"' in info and f'"virtual-size": {SIZE}' in info
    back = tmp_path / "back.raw"
    sh("qemu-img", "convert", "-f", fmt, "-O", "raw", str(out), str(back))
    assert back.read_bytes() == disk
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d.img", out.name, "back.raw"])  # no temp left


def test_a_damaged_chunk_stops_the_export_and_leaves_nothing(saved: tuple[Path, bytearray], tmp_path: Path):
    image, _ = saved
    with ImageReader(str(image)) as img:
        e = next(e for e in img.entries() if e.codec is not f.Codec.ZERO and e.offset > 2 * MIB)
    flip(image, e.position + f.RECORD_SIZE + e.stored // 2)
    for fmt in ("raw", "qcow2"):
        r = export(image, tmp_path / f"out.{fmt}", "--format", fmt)
        assert r.proc.returncode == ImageError.exit_code
        assert f"byte {e.offset}" in r.event("error")["message"]
        assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.img"]


def test_an_existing_file_is_not_replaced_without_yes(saved: tuple[Path, bytearray], tmp_path: Path):
    image, disk = saved
    out = tmp_path / "disk.raw"
    out.write_bytes(b"keep me")
    r = export(image, out)
    assert r.proc.returncode == RefusedError.exit_code and "--yes" in r.stderr
    assert out.read_bytes() == b"keep me"
    (tmp_path / "link.raw").symlink_to(out)
    assert export(image, tmp_path / "link.raw", "--yes").proc.returncode == RefusedError.exit_code
    assert out.read_bytes() == b"keep me"
    assert export(image, out, "--yes").proc.returncode == 0
    assert out.read_bytes() == disk
    os.unlink(out)


def test_a_qcow2_export_reads_only_what_the_image_stores(tmp_path: Path) -> None:
    """A 1 TiB disk with 3 MiB of data: qemu-img asks the served disk where its data lies (SEEK_DATA and
    SEEK_HOLE from the image's index), so it reads those chunks only; read whole through FUSE it would
    take hours. No raw copy is made on the way, and the qcow2 holds the data where the raw export does."""
    size, chunk = 1 << 40, MIB
    pieces = {0: os.urandom(MIB), 512 << 30: os.urandom(MIB), size - MIB: os.urandom(MIB)}
    image = tmp_path / "big.img"
    write_pieces(image, size, pieces, chunk=chunk)
    out, raw = tmp_path / "big.qcow2", tmp_path / "big.raw"
    r = Recovery("image", "export", str(image), "--output", str(out), "--format", "qcow2")
    assert r.wait(120) == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([image.name, out.name])  # no raw on the way
    assert r.event("image_export")["data_bytes"] == 3 * MIB
    assert os.stat(out).st_blocks * 512 < 16 * MIB
    mapped = json.loads(sh("qemu-img", "map", "--output=json", str(out)).stdout)
    assert [(m["start"], m["length"]) for m in mapped if m["data"]] == [(at, MIB) for at in sorted(pieces)]
    assert export(image, raw).proc.returncode == 0
    assert sh("qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(out), check=False).returncode == 0


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_link_planted_where_the_export_is_made_is_never_written_through(
    saved: tuple[Path, bytearray], tmp_path: Path, fmt: str
) -> None:
    """The review's finding: qemu-img made `.NAME.part` itself, following a link planted there, as root."""
    image, _ = saved
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    out = tmp_path / f"x.{fmt}"
    for name in (f".{out.name}.part", f".{out.name}.raw.part"):
        (tmp_path / name).symlink_to(victim)
    assert export(image, out, "--format", fmt).proc.returncode == 0
    assert victim.read_bytes() == b"keep me" and not out.is_symlink()


def test_an_export_never_replaces_an_image_an_increment_builds_on(tmp_path: Path) -> None:
    from tests.diskimage.test_chain import SIZE as CHAIN_SIZE
    from tests.diskimage.test_chain import increment

    disk = bytes(disk_bytes(CHAIN_SIZE, seed=5))
    base = tmp_path / "base.img"
    write_image(base, disk)
    with ImageReader(str(base)) as parent:
        increment(tmp_path / "inc.img", parent, disk)
    before = base.read_bytes()
    for image in ("inc.img", "base.img"):
        r = export(tmp_path / image, base, "--yes")
        assert r.proc.returncode == 3, r.stderr  # refused: inc.img would be left without its parent
        assert "inc.img" in r.stderr and base.read_bytes() == before
    with ImageReader(str(tmp_path / "inc.img")) as image:
        assert image.read(0, CHAIN_SIZE) == disk
