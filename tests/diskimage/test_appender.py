"""The image writer's appends past the page cache: on an ext4 drive (a loop device), with O_DIRECT, the
file holds exactly what was appended, whatever the sizes; a flush pads the last block, the next append
writes it again; a resume goes on from a byte inside a block. Without O_DIRECT, the same bytes."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.diskimage.appender import BLOCK, STAGE, Appender
from tests.helpers import loop_device, mounted, sh

pytestmark = pytest.mark.root


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Path]:
    backing = tmp_path / "drive.img"
    with open(backing, "wb") as f:
        f.truncate(64 << 20)
    with loop_device(backing, partitions=False) as dev:
        sh("mkfs.ext4", "-q", dev)
        with mounted(dev) as root:
            yield root


def pieces(seed: int) -> list[bytes]:
    """Appends of awkward sizes: tiny, odd, a block, more than the stage holds."""
    rng = random.Random(seed)
    sizes = [1, 63, BLOCK, BLOCK - 1, 3 * BLOCK + 5, STAGE + 17, 100_000, 7, STAGE - 3]
    return [rng.randbytes(n) for n in sizes]


def direct_twin(fd: int) -> int:
    return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)


@pytest.mark.parametrize("direct", [True, False])
def test_the_file_holds_what_was_appended_with_flushes_between(drive: Path, direct: bool) -> None:
    path = drive / "image"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    twin = direct_twin(fd) if direct else None
    expected = bytearray()
    try:
        appender = Appender(fd, str(path), 0, twin)
        for i, piece in enumerate(pieces(1)):
            appender.append(piece)
            expected += piece
            assert appender.end == len(expected)
            if i % 3 == 1:
                appender.flush()  # padded to a block: the next append writes that block again
                assert path.read_bytes()[: len(expected)] == expected
        appender.flush()
        assert (appender.direct_fd is not None) == direct  # O_DIRECT was kept, never fallen back from
        appender.close()
    finally:
        if twin is not None:
            os.close(twin)
        os.close(fd)
    written = path.read_bytes()
    assert written[: len(expected)] == expected
    assert written[len(expected) :] == bytes(len(written) - len(expected))  # at most the padding of one block
    assert len(written) - len(expected) < BLOCK


def test_a_resume_goes_on_from_a_byte_inside_a_block(drive: Path) -> None:
    """A file cut at an unaligned byte (as a resume cuts an interrupted save): the block it falls in is
    read back and written whole, so the bytes before the cut stay as they were."""
    path = drive / "image"
    first, rest = random.Random(2).randbytes(3 * BLOCK + 123), random.Random(3).randbytes(2 * BLOCK + 9)
    path.write_bytes(first + b"torn record left by a kill")
    fd = os.open(path, os.O_RDWR)
    twin = direct_twin(fd)
    try:
        os.ftruncate(fd, len(first))
        appender = Appender(fd, str(path), len(first), twin)
        appender.append(rest)
        appender.flush()
        appender.close()
    finally:
        os.close(twin)
        os.close(fd)
    assert path.read_bytes()[: len(first) + len(rest)] == first + rest
