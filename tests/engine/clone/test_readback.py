"""Reading the target back: a target that cannot be read back leaves the copy unverified (exit 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.engine.clone.readback import ALIGN, DirectReader
from recovery.errors import VerificationError


def test_the_target_is_read_back_at_any_offset(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    path.write_bytes(bytes(range(256)) * 64)
    reader = DirectReader(str(path))
    try:
        buf = memoryview(bytearray(4 * ALIGN))
        assert bytes(reader.read(buf, 4097, 3)) == bytes([1, 2, 3])
    finally:
        reader.close()


def test_a_target_that_ends_early_cannot_be_verified(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    path.write_bytes(bytes(3 * ALIGN))
    reader = DirectReader(str(path))
    try:
        with pytest.raises(VerificationError, match=f"could not be read back at byte {3 * ALIGN}: it ends there") \
                as caught:
            reader.read(memoryview(bytearray(4 * ALIGN)), 2 * ALIGN, 2 * ALIGN)
    finally:
        reader.close()
    assert caught.value.exit_code == 5


def test_a_failed_read_back_names_the_byte_and_the_reason(tmp_path: Path) -> None:
    reader = DirectReader(str(tmp_path))  # a directory: every read fails
    try:
        with pytest.raises(VerificationError, match="could not be read back at byte 0: Is a directory"):
            reader.read(memoryview(bytearray(ALIGN)), 0, ALIGN)
    finally:
        reader.close()
