"""Reading the target back, on real files: a clean copy passes, a changed byte is found and named as
the range of its frame, exact mode compares the whole digest (and says so plainly when only the whole
differs), and the frames come as a FrameList, also one restored from a journal's compact form."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.readback import ALIGN, DirectReader, ReadbackResult, verify_image, verify_ranges
from recovery.errors import Interrupted, VerificationError
from recovery.protocol.frames import Kind, zero_digest

MIB = 1 << 20
SIZE = 13 * MIB + 3000  # the last frame ends off the 4 KiB grid: read without O_DIRECT
ZEROS = range(3 * MIB, 5 * MIB)  # a stretch of zeros: ZERO frames where the chunks fall in it


def source_bytes() -> bytes:
    data = bytearray(os.urandom(SIZE))
    data[ZEROS.start : ZEROS.stop] = bytes(len(ZEROS))
    return bytes(data)


def frames_of(data: bytes, chunk: int, *, skip: tuple[int, ...] = ()) -> FrameList:
    """The frames a sender would record for ``data`` in chunks of ``chunk`` (but those at ``skip``)."""
    frames = FrameList()
    for offset in range(0, len(data), chunk):
        if offset in skip:
            continue
        piece = data[offset : offset + chunk]
        zero = not any(piece)
        frames.append(
            offset,
            len(piece),
            zero_digest(len(piece)) if zero else blake3.blake3(piece).digest(),
            Kind.ZERO if zero else Kind.DATA,
        )
    return frames


def write(path: Path, data: bytes, *, flip: tuple[int, ...] = ()) -> Path:
    """``data`` at ``path``, with the byte at each offset in ``flip`` changed."""
    changed = bytearray(data)
    for offset in flip:
        changed[offset] ^= 0x5A
    path.write_bytes(changed)
    return path


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


@pytest.fixture(scope="module")
def data() -> bytes:
    return source_bytes()


def digest(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@pytest.mark.parametrize("chunk", [MIB, 6 * MIB], ids=["1M", "6M"])  # 6 MiB: frames longer than a read
def test_a_clean_copy_passes_in_both_modes(tmp_path: Path, data: bytes, chunk: int) -> None:
    target = write(tmp_path / "target.img", data)
    frames = frames_of(data, chunk)
    progress = Progress()
    used = verify_ranges(str(target), frames, on_progress=progress)
    assert (used.mismatches, used.image_digest) == ([], None)
    assert progress.calls[-1] == (SIZE, SIZE)
    exact = verify_image(str(target), SIZE, digest(data), frames, on_progress=progress)
    assert (exact.mismatches, exact.image_digest) == ([], digest(data))


@pytest.mark.parametrize("chunk", [MIB, 6 * MIB], ids=["1M", "6M"])
@pytest.mark.parametrize("where", [2 * MIB + 12345, ZEROS.start + 1, SIZE - 1], ids=["data", "zeros", "unaligned-tail"])
def test_one_changed_byte_is_found_and_named_as_its_frames_range(
    tmp_path: Path, data: bytes, chunk: int, where: int
) -> None:
    target = write(tmp_path / "target.img", data, flip=(where,))
    frames = frames_of(data, chunk)
    start = where - where % chunk
    expected = [(start, min(chunk, SIZE - start))]
    assert verify_ranges(str(target), frames, on_progress=Progress()).mismatches == expected
    exact = verify_image(str(target), SIZE, digest(data), frames, on_progress=Progress())
    assert exact.image_digest == digest(target.read_bytes()) != digest(data)
    assert exact.mismatches == expected


def test_neighbouring_bad_frames_are_named_as_one_range(tmp_path: Path, data: bytes) -> None:
    target = write(tmp_path / "target.img", data, flip=(MIB + 5, 2 * MIB + 7, 7 * MIB))
    result = verify_ranges(str(target), frames_of(data, MIB), on_progress=Progress())
    assert result.mismatches == [(MIB, 2 * MIB), (7 * MIB, MIB)]


def test_exact_mode_without_the_sources_digest_checks_every_frame_in_the_same_pass(tmp_path: Path, data: bytes) -> None:
    """A resumed clone has no digest of the whole source: each frame's own digest decides."""
    clean = verify_image(
        str(write(tmp_path / "clean.img", data)), SIZE, None, frames_of(data, MIB), on_progress=Progress()
    )
    assert (clean.mismatches, clean.image_digest) == ([], digest(data))
    target = write(tmp_path / "target.img", data, flip=(9 * MIB + 1,))
    bad = verify_image(str(target), SIZE, None, frames_of(data, MIB), on_progress=Progress())
    assert bad.mismatches == [(9 * MIB, MIB)]
    assert bad.image_digest == digest(target.read_bytes())  # the target as read back


def test_when_every_frame_matches_but_the_whole_does_not_the_whole_target_is_named(tmp_path: Path, data: bytes) -> None:
    target = write(tmp_path / "target.img", data, flip=(4 * MIB,))
    frames = frames_of(target.read_bytes(), MIB)  # frames of what the target holds, the digest of the source
    result = verify_image(str(target), SIZE, digest(data), frames, on_progress=Progress())
    assert result.mismatches == [(0, SIZE)]


def test_used_mode_reads_back_only_the_frames_that_were_written(tmp_path: Path, data: bytes) -> None:
    skipped = (2 * MIB, 10 * MIB)  # free space: never written, so never compared
    frames = frames_of(data, MIB, skip=skipped)
    target = write(tmp_path / "target.img", data, flip=(2 * MIB + 1, 10 * MIB + 1, 11 * MIB + 1))
    progress = Progress()
    result = verify_ranges(str(target), frames, on_progress=progress)
    assert result.mismatches == [(11 * MIB, MIB)]
    assert progress.calls[-1] == (SIZE - 2 * MIB, SIZE - 2 * MIB)  # what the frames cover
    exact = verify_image(str(target), SIZE, None, frames, on_progress=Progress())  # frames with gaps
    assert exact.mismatches == [(11 * MIB, MIB)]
    assert exact.image_digest == digest(target.read_bytes())  # the whole target, gaps included


def test_a_frame_list_restored_from_a_journal_verifies_the_same(tmp_path: Path, data: bytes) -> None:
    sent = frames_of(data, MIB)
    records, kinds, runs = sent.compact(0, len(sent))
    assert runs  # the zeros travel as runs, without records
    restored = FrameList()
    restored.extend_compact(records, kinds, runs)
    assert restored.list_digest() == sent.list_digest()
    target = write(tmp_path / "target.img", data, flip=(ZEROS.start + MIB + 2,))
    result = verify_ranges(str(target), restored, on_progress=Progress())
    assert result.mismatches == [(ZEROS.start + MIB, MIB)]


def test_a_stop_asked_for_ends_the_read_back(tmp_path: Path, data: bytes) -> None:
    target = write(tmp_path / "target.img", data)
    progress = Progress()
    with pytest.raises(Interrupted, match="read-back"):
        verify_ranges(str(target), frames_of(data, MIB), on_progress=progress, should_stop=lambda: True)
    assert progress.calls and progress.calls[-1][0] < SIZE  # it stopped before the end


def test_the_result_says_how_long_it_took(tmp_path: Path, data: bytes) -> None:
    result = verify_ranges(str(write(tmp_path / "target.img", data)), frames_of(data, MIB), on_progress=Progress())
    assert isinstance(result, ReadbackResult) and result.seconds > 0


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
        with pytest.raises(
            VerificationError, match=f"could not be read back at byte {3 * ALIGN}: it ends there"
        ) as caught:
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
