"""A delta clone's unchanged chunks read back during the stream (engine/clone/earlycheck.py), on a real
file: a range whose bytes give the sender's digest is checked, one that does not is a mismatch the
end's read-back reports, one a later pass replaced is read at the end instead."""

from __future__ import annotations

import os
from pathlib import Path

import blake3

from recovery.engine.clone.earlycheck import EarlyCheck
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.readback import verify_ranges
from recovery.protocol.frames import Kind

CHUNK = 1 << 20


def test_checked_ranges_are_not_read_again_and_their_mismatches_count(tmp_path: Path) -> None:
    disk = tmp_path / "target.img"
    data = os.urandom(6 * CHUNK)
    disk.write_bytes(data)
    digests = [blake3.blake3(data[i * CHUNK : (i + 1) * CHUNK]).digest() for i in range(6)]
    wrong = blake3.blake3(b"what the source holds there").digest()
    frames = FrameList()
    for i in range(6):
        frames.append(i * CHUNK, CHUNK, wrong if i == 2 else digests[i], Kind.DATA)
    early = EarlyCheck(str(disk), CHUNK)
    early.start()
    for i in (1, 2, 3):  # SAME frames: the target's own bytes, as the sender says the source has them
        early.submit(i, i * CHUNK, CHUNK, frames.record(i)[2])
    early.forget(3)  # a later pass wrote chunk 3 after all
    checked = early.finish()
    assert checked == {1: (CHUNK, CHUNK, True), 2: (2 * CHUNK, CHUNK, False)}
    seen: list[int] = []
    result = verify_ranges(str(disk), frames, on_progress=lambda done, total: seen.append(total), checked=checked)
    assert result.mismatches == [(2 * CHUNK, CHUNK)]  # found during the stream, reported at the end
    assert seen[-1] == 4 * CHUNK  # the end read only what the stream did not check


def test_a_range_that_cannot_be_read_is_left_to_the_end(tmp_path: Path) -> None:
    disk = tmp_path / "target.img"
    disk.write_bytes(os.urandom(CHUNK))
    early = EarlyCheck(str(disk), CHUNK)
    early.start()
    early.submit(0, 4 * CHUNK, CHUNK, bytes(32))  # past the end of the file
    assert early.finish() == {}


def test_a_stopped_check_never_holds_the_stream(tmp_path: Path) -> None:
    disk = tmp_path / "target.img"
    disk.write_bytes(os.urandom(CHUNK))
    early = EarlyCheck(str(disk), CHUNK)
    early.start()
    early.close()  # the clone failed: the checker stops
    for i in range(200):  # more than it queues: none of these may block
        early.submit(i, 0, CHUNK, bytes(32))
