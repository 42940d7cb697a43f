"""Images made in the tests' own way: chunks straight through the writer (no clone), for the codec tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

import blake3
import zstandard

from recovery.diskimage import format as f
from recovery.diskimage.writer import ImageWriter, new_header, stored_form
from tests.helpers import Recovery

MIB = 1 << 20


def disk_bytes(size: int, seed: int = 1) -> bytearray:
    """A disk's worth of bytes: compressible text, random blocks and zero stretches."""
    rng = random.Random(seed)
    out = bytearray(size)
    for at in range(0, size, 64 << 10):
        kind = rng.choice(("zero", "text", "random", "text"))
        n = min(64 << 10, size - at)
        if kind == "text":
            out[at : at + n] = (b"usb4-recovery %08d " % at * (n // 22 + 1))[:n]
        elif kind == "random":
            out[at : at + n] = rng.randbytes(n)
    return out


def write_pieces(path: Path, size: int, pieces: dict[int, bytes], *, chunk: int = MIB) -> None:
    """An image of a disk of ``size`` bytes that holds only ``pieces`` (offset: bytes, each within a chunk),
    for disks too large to hold in memory."""
    header, sealer = new_header(size, chunk, 512, None)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    writer = ImageWriter(fd, str(path), header, sealer)
    writer.start({"made by": "tests"})
    cctx = zstandard.ZstdCompressor(level=1)
    for at in sorted(pieces):
        data = pieces[at]
        codec, stored = stored_form(cctx, header, sealer, at, data)
        writer.put(at, len(data), blake3.blake3(data).digest(), codec, stored)
    writer.finish({"format": "usb4-recovery image", "version": f"{f.MAJOR}.{f.MINOR}"})
    writer.close()
    os.close(fd)


def write_image(
    path: Path,
    disk: bytes | bytearray,
    *,
    chunk: int = MIB,
    extents: list[tuple[int, int]] | None = None,
    passphrase: bytes | None = None,
    manifest: dict[str, object] | None = None,
    finish: bool = True,
) -> ImageWriter:
    """An image of ``disk`` holding ``extents`` (default: all of it), zero chunks as entries only."""
    header, sealer = new_header(len(disk), chunk, 512, passphrase)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    writer = ImageWriter(fd, str(path), header, sealer)
    writer.start({"made by": "tests"})
    cctx = zstandard.ZstdCompressor(level=1)
    for off, n in extents or [(0, len(disk))]:
        pos = off
        while pos < off + n:
            stop = min(off + n, (pos // chunk + 1) * chunk)
            data = bytes(disk[pos:stop])
            if data == bytes(len(data)):
                writer.zero(pos, len(data))
            else:
                codec, stored = stored_form(cctx, header, sealer, pos, data)
                writer.put(pos, len(data), blake3.blake3(data).digest(), codec, stored)
            pos = stop
    if finish:
        writer.finish({"format": "usb4-recovery image", "version": f"{f.MAJOR}.{f.MINOR}", **(manifest or {})})
    else:
        writer.flush()  # a save that stopped after its last flush
    writer.close()
    os.close(fd)
    return writer


def encrypted_sample(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The demo's 64 MiB sample disk saved encrypted (with `recovery image save`): the image, a file
    with its passphrase, a file with a wrong one."""
    from recovery.demo import build_sample_disk

    source = tmp_path / "disk.raw"
    build_sample_disk(str(source), 64)
    secret, wrong = tmp_path / "secret", tmp_path / "wrong"
    secret.write_text("the right passphrase\n")
    wrong.write_text("not it\n")
    image = tmp_path / "disk.img"
    save = Recovery("image", "save", "--source", str(source), "--output", str(image), "--passphrase-file", str(secret))
    assert save.wait() == 0, save.stderr
    return image, secret, wrong
