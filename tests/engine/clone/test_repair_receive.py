"""The receiver's side of a delta's repair: a real ReceivePipeline, EarlyCheck and file target, and a
scripted sender on a socket pair. Chunks 3 and 5 of the target changed under the record: the receiver
finds them, asks for them at the END, takes them again only with their SAME frame's digest and only once,
and until they are written again its journal never says the target holds them."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import pytest

from recovery.engine.clone import recvpipe
from recovery.engine.clone.earlycheck import EarlyCheck
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.readback import verify_ranges
from recovery.engine.clone.recvpipe import UNKNOWN, DurablePoint, ReceivePipeline, _runs
from recovery.engine.clone.target import Target
from recovery.errors import RemoteProtocolError
from recovery.link.base import FdChannel
from recovery.protocol import blocks
from recovery.protocol.frames import (
    ChunkHeader,
    Codec,
    FrameError,
    FrameLimits,
    Kind,
    encode_header,
    end_header,
    pass_header,
    rewind_header,
)
from recovery.protocol.limits import DELTA_BLOCK
from recovery.protocol.pake import DataKeys

MIB = 1 << 20
N = 8
CHANGED = (3, 5)
KEYS = DataKeys(header=bytes(32), payload=bytes(32))
SOURCE = [bytes([i + 1]) * MIB for i in range(N)]


def digest(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


@dataclass
class Run:
    pipe: ReceivePipeline
    early: EarlyCheck
    out: socket.socket
    path: Path
    asked: list[tuple[int, int, list[tuple[int, int]]]] = field(default_factory=list)
    resent: list[tuple[object, ...]] = field(default_factory=list)

    def send(self, h: ChunkHeader, payload: bytes = b"", epoch: int = 0) -> None:
        self.out.sendall(encode_header(h, KEYS.for_epoch(epoch).header) + payload)

    def data(self, seq: int, index: int, data: bytes, epoch: int = 1) -> None:
        self.send(ChunkHeader(seq, index * MIB, MIB, MIB, Kind.DATA, Codec.RAW, digest(data)), data, epoch)

    def block(self, seq: int, offset: int, data: bytes, epoch: int = 1) -> None:
        if data == bytes(len(data)):
            self.send(ChunkHeader(seq, offset, len(data), 0, Kind.ZERO, Codec.RAW, digest(data)), b"", epoch)
        else:
            self.send(ChunkHeader(seq, offset, len(data), len(data), Kind.DATA, Codec.RAW, digest(data)), data, epoch)

    def wait(self, done: object, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while not done() and self.pipe.crew.error is None:  # type: ignore[operator]
            assert time.monotonic() < deadline
            time.sleep(0.02)


@pytest.fixture
def blocky(tmp_path: Path) -> Iterator[Run]:
    """As ``run``, but chunk 6 changed on the source in blocks 2 and 9 since the target's copy: it goes as a
    BLOCKS frame (capability "delta-blocks")."""
    yield from begin(tmp_path, end=True, blocks_at=6)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """The first pass sent (SAME frames for all), its END too, and the receiver's repair request in."""
    yield from begin(tmp_path, end=True)


@pytest.fixture
def unended(tmp_path: Path) -> Iterator[Run]:
    """The first pass sent, and no END: the early check finds the changed chunks meanwhile."""
    yield from begin(tmp_path, end=False)


B = DELTA_BLOCK
NEW6 = bytearray(SOURCE[6])
NEW6[2 * B : 3 * B] = b"\x99" * B
NEW6[9 * B : 10 * B] = bytes(B)  # a block of zeros: a ZERO frame
NEW6[20 * B : 23 * B] = b"\x77" * 3 * B  # three blocks: one run
NEW6 = bytes(NEW6)


def blocks_frame(seq: int, epoch: int = 0) -> tuple[ChunkHeader, bytes]:
    """The BLOCKS frame of the source's new chunk 6, with its payload."""
    size = blocks.payload_size(MIB)
    header = ChunkHeader(seq, 6 * MIB, MIB, size, Kind.BLOCKS, Codec.RAW, digest(NEW6))
    key = KEYS.for_epoch(epoch).header
    return header, blocks.encode(key, encode_header(header, key), blocks.digests_of(NEW6))


def begin(tmp_path: Path, *, end: bool, blocks_at: int | None = None, forge: bool = False) -> Iterator[Run]:
    path = tmp_path / "target.img"
    path.write_bytes(b"".join(os.urandom(MIB) if i in CHANGED else SOURCE[i] for i in range(N)))
    offered = FrameList()
    for i in range(N):
        offered.append(i * MIB, MIB, digest(SOURCE[i]), Kind.DATA)
    target = Target(str(path))
    limits = FrameLimits(MIB, N * MIB, header_key=KEYS.header, frames=N, bytes=N * MIB, rewinds=True,
                         passes=True, offered=offered, blocks=blocks_at is not None)  # fmt: skip
    early = EarlyCheck(target.read_path, MIB)
    ours, theirs = socket.socketpair()
    holder: list[Run] = []
    pipe = ReceivePipeline(
        FdChannel(ours.fileno(), owner=ours),
        target,
        limits=limits,
        keys=KEYS,
        on_durable=lambda point: None,
        on_resend=lambda *a: holder[0].resent.append(a),
        early=early,
        on_repair=lambda seq, epoch, ranges, changed: holder[0].asked.append((seq, epoch, ranges)),
        passes_expected=False,
    )
    holder.append(Run(pipe, early, theirs, path))
    early.start()
    pipe.start()
    for i in range(N):
        if i == blocks_at:
            header, payload = blocks_frame(i)
            holder[0].send(header, bytes([payload[0] ^ forge]) + payload[1:])
            continue
        holder[0].send(ChunkHeader(i, i * MIB, MIB, 0, Kind.SAME, Codec.RAW, digest(SOURCE[i])))
    if end:
        holder[0].send(end_header(N))
        holder[0].wait(lambda: holder[0].asked)
    yield holder[0]
    pipe.crew.shutdown()
    early.close()
    theirs.close()


def repair_changed(run: Run) -> None:
    """The first round's start: the changed chunks."""
    run.send(rewind_header(N, 1))
    run.send(pass_header(N), epoch=1)
    run.data(N + 1, 3, SOURCE[3])
    run.data(N + 2, 5, SOURCE[5])


def test_the_changed_chunks_are_asked_for_and_the_copy_verifies(run: Run) -> None:
    assert run.asked == [(N, 1, [(3 * MIB, MIB), (5 * MIB, MIB)])]
    repair_changed(run)
    run.send(end_header(N + 3), epoch=1)
    run.wait(run.pipe.finished.is_set)
    assert run.pipe.crew.error is None
    checked = run.early.finish()
    assert not verify_ranges(
        run.pipe.target.read_path, run.pipe.framelist, on_progress=lambda *a: None, checked=checked
    ).mismatches
    assert run.path.read_bytes() == b"".join(SOURCE)
    assert run.pipe.same_bytes == (N - len(CHANGED)) * MIB


@pytest.mark.parametrize("how", ["another digest", "twice", "not asked"])
def test_a_repair_that_is_not_the_one_asked_for_is_refused(run: Run, how: str) -> None:
    run.send(rewind_header(N, 1))
    run.send(pass_header(N), epoch=1)
    if how == "another digest":  # bytes the sender's SAME frame never announced
        run.data(N + 1, 3, b"\xee" * MIB)
    elif how == "twice":
        run.data(N + 1, 3, SOURCE[3])
        run.send(pass_header(N + 2), epoch=1)
        run.data(N + 3, 3, SOURCE[3])
    else:
        run.data(N + 1, 4, SOURCE[4])
    run.wait(lambda: run.pipe.crew.error is not None)
    assert isinstance(run.pipe.crew.error, RemoteProtocolError), run.pipe.crew.error


def test_a_link_lost_in_the_repair_leaves_a_journal_that_never_claims_the_changed_chunks(run: Run) -> None:
    """The review's finding: the SAME frames of changed chunks were journaled with the source's digests, so
    a resume believed the target held them and the copy ended unverified."""
    run.send(rewind_header(N, 1))
    run.send(pass_header(N), epoch=1)
    run.data(N + 1, 3, SOURCE[3])
    time.sleep(0.5)
    run.out.close()
    run.wait(lambda: False) if False else run.wait(lambda: run.pipe.crew.error is not None)
    run.pipe.crew.shutdown()
    settled: list[object] = []
    run.pipe.settle(settled.append)
    held = run.path.read_bytes()
    for i in range(N):
        offset, length, said, _ = run.pipe.framelist.record(i)
        if said == digest(SOURCE[i]):  # what the journal says the target holds, it holds
            assert digest(held[offset : offset + length]) == said, i
    assert run.pipe.framelist.digest(5) != digest(SOURCE[5])


def test_a_link_lost_in_the_first_pass_journals_no_changed_chunk_as_held(unended: Run) -> None:
    """The review's wider finding: a link lost before the END, after the early check found chunks changed,
    journaled them with the source's digests; now the settled point says the target holds no known digest
    there, so a resume sends them again."""
    run = unended
    run.wait(lambda: len(run.early.changed()) == len(CHANGED))
    run.out.close()
    run.wait(lambda: run.pipe.crew.error is not None)
    run.pipe.crew.shutdown()
    settled: list[DurablePoint] = []
    run.pipe.settle(settled.append)
    [point] = settled
    assert sorted(point.replaced) == list(CHANGED)
    held = run.path.read_bytes()
    for i in range(N):
        offset, length, said, _ = run.pipe.framelist.record(i)
        assert said == UNKNOWN if i in CHANGED else digest(held[offset : offset + length]) == said, i


def repair_all(run: Run) -> None:
    """The round asked for, whole: the changed chunks, then chunk 6's runs of blocks; the pipeline finishes."""
    repair_changed(run)
    run.block(N + 3, 6 * MIB + 2 * B, NEW6[2 * B : 3 * B])
    run.block(N + 4, 6 * MIB + 9 * B, NEW6[9 * B : 10 * B])
    run.block(N + 5, 6 * MIB + 20 * B, NEW6[20 * B : 23 * B])
    run.send(end_header(N + 6), epoch=1)
    run.wait(run.pipe.finished.is_set)
    assert run.pipe.crew.error is None


def test_only_the_blocks_that_differ_cross_and_the_copy_verifies(blocky: Run) -> None:
    """Capability "delta-blocks": the BLOCKS frame's chunk is compared block by block with the target; the
    blocks that differ (adjacent ones as a run) are asked for with the changed chunks, in one round, and
    written alone."""
    run = blocky
    runs = [(6 * MIB + 2 * B, B), (6 * MIB + 9 * B, B), (6 * MIB + 20 * B, 3 * B)]
    assert run.asked == [(N, 1, [(3 * MIB, MIB), (5 * MIB, MIB), *runs])]
    assert run.pipe.framelist.digest(6) == UNKNOWN  # until its blocks are written, a journal claims nothing
    repair_all(run)
    assert run.pipe.framelist.digest(6) == digest(NEW6)
    checked = run.early.finish()
    assert 6 not in checked  # not the early check's: its read-back is block_reads' (tested below); whole here
    assert not verify_ranges(
        run.pipe.target.read_path, run.pipe.framelist, on_progress=lambda *a: None, checked=checked
    ).mismatches
    assert run.path.read_bytes() == b"".join(NEW6 if i == 6 else SOURCE[i] for i in range(N))
    assert run.pipe.same_bytes == (N - len(CHANGED) - 1) * MIB + MIB - 5 * B
    assert run.pipe.resends == 1  # the changed chunks; the blocks are the BLOCKS frame's due


@pytest.mark.parametrize("how", ["another digest", "twice", "a whole chunk"])
def test_a_block_that_is_not_the_one_asked_for_is_refused(blocky: Run, how: str) -> None:
    run = blocky
    run.send(rewind_header(N, 1))
    run.send(pass_header(N), epoch=1)
    run.data(N + 1, 3, SOURCE[3])
    run.data(N + 2, 5, SOURCE[5])
    if how == "another digest":
        run.block(N + 3, 6 * MIB + 2 * B, b"\x98" * B)
    elif how == "twice":
        run.block(N + 3, 6 * MIB + 2 * B, NEW6[2 * B : 3 * B])
        run.block(N + 4, 6 * MIB + 2 * B, NEW6[2 * B : 3 * B])
    else:
        run.data(N + 3, 6, NEW6)
    run.wait(lambda: run.pipe.crew.error is not None or run.pipe.finished.is_set())
    assert isinstance(run.pipe.crew.error, RemoteProtocolError | FrameError), run.pipe.crew.error


def repair_first_block(run: Run) -> None:
    """The round's start: the changed chunks, then the first of chunk 6's runs of blocks."""
    repair_changed(run)
    run.block(N + 3, 6 * MIB + 2 * B, NEW6[2 * B : 3 * B])


def test_a_round_that_leaves_out_a_block_is_refused(blocky: Run) -> None:
    run = blocky
    repair_first_block(run)
    run.send(end_header(N + 4), epoch=1)
    run.wait(lambda: run.pipe.crew.error is not None)
    assert "without 2 of the ranges" in str(run.pipe.crew.error)


def test_a_damaged_blocks_frame_is_asked_for_again(tmp_path: Path) -> None:
    """Its digests' MAC fails: they are never used; with capability "resend" it is asked for again."""
    gen = begin(tmp_path, end=False, blocks_at=6, forge=True)
    run = next(gen)
    try:
        run.wait(lambda: run.resent)
        assert run.resent[0][:2] == (6, 1) and "authentication" in str(run.resent[0][2])
        assert run.pipe.crew.error is None
    finally:
        gen.close()


def test_a_link_lost_in_a_round_of_blocks_journals_the_chunk_as_unknown(blocky: Run) -> None:
    """One of its runs of blocks written, then the link lost: the journal says the target holds no known digest
    for the chunk, so a resume compares it with the source and sends it again."""
    run = blocky
    repair_first_block(run)
    time.sleep(0.5)
    run.out.close()
    run.wait(lambda: run.pipe.crew.error is not None)
    run.pipe.crew.shutdown()
    settled: list[DurablePoint] = []
    run.pipe.settle(settled.append)
    assert run.pipe.framelist.digest(6) == UNKNOWN
    held = run.path.read_bytes()
    for i in range(N):
        offset, length, said, _ = run.pipe.framelist.record(i)
        if said != UNKNOWN:  # what the journal says the target holds, it holds
            assert digest(held[offset : offset + length]) == said, i


def test_adjacent_blocks_are_asked_for_as_one_run() -> None:
    """A single block comes with its digest; a run of adjacent ones as one range, checked by its chunk's
    read-back; the chunk's short last block ends its run."""
    ranges = blocks.block_ranges(MIB, MIB - 4096)
    digests = [bytes([k]) * 32 for k in range(len(ranges))]
    last = len(ranges) - 1
    assert _runs(ranges, {k: digests[k] for k in [0, 2, 3, 4, last - 1, last]}) == [
        (MIB, B, digests[0]),
        (MIB + 2 * B, 3 * B, None),
        (MIB + (last - 1) * B, 2 * B - 4096, None),
    ]


@pytest.mark.parametrize("limit", ["MAX_BLOCKS_FRAMES", "MAX_BLOCKS_BYTES"])
def test_blocks_frames_beyond_the_senders_budget_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    """The review's finding: a hostile sender could send a BLOCKS frame for every chunk offered, and the
    receiver kept each one's digests to the END (about 20 KiB a 4 MiB chunk: gigabytes for a large disk).
    Now it takes no more than an honest sender's budget, in frames and bytes."""
    monkeypatch.setattr(recvpipe, limit, 0)
    send = Run.send

    def send_until_refused(run: Run, *args: Any) -> None:
        with contextlib.suppress(OSError):  # the receiver stopped reading
            send(run, *args)

    monkeypatch.setattr(Run, "send", send_until_refused)
    gen = begin(tmp_path, end=True, blocks_at=6)
    run = next(gen)
    try:
        assert isinstance(run.pipe.crew.error, RemoteProtocolError), run.pipe.crew.error
        assert "BLOCKS" in str(run.pipe.crew.error)
    finally:
        gen.close()


def test_only_the_digests_of_the_blocks_that_differ_are_kept(blocky: Run) -> None:
    """The review's finding: every BLOCKS frame's list of block digests was kept until the END; once the early
    check compared them, only the digests of the blocks that differ (those a single block is checked with) are."""
    assert blocky.pipe._blocks == {6: (digest(NEW6), MIB // B)}
    kept = blocky.early.differing(6)
    assert kept == {k: digest(NEW6[k * B : (k + 1) * B]) for k in (2, 9, 20, 21, 22)}
    numbers, digests = blocky.early._differing[6]  # compact: 2 bytes a number, the digests joined
    assert numbers.itemsize == 2 and len(digests) == 5 * blocks.DIGEST


def test_blocks_not_compared_are_all_asked_for_as_one_run(tmp_path: Path) -> None:
    """The early check could not compare the BLOCKS frame (its thread stopped): all of its blocks are asked for,
    as one run, checked by the chunk's read-back."""
    gen = begin(tmp_path, end=False, blocks_at=6)
    run = next(gen)
    try:
        run.wait(lambda: len(run.pipe.framelist) == N)
        run.early.close()  # stopped, whatever it compared is not there yet
        run.early._differing.clear()
        run.send(end_header(N))
        run.wait(lambda: run.asked)
        assert run.pipe.crew.error is None
        [(_, _, ranges)] = run.asked
        assert (6 * MIB, MIB) in ranges
    finally:
        gen.close()


def test_runs_the_rounds_cannot_carry_are_coarsened_to_one_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More ranges than the rounds left can carry (here 2 rounds of 2): each BLOCKS frame's blocks that differ
    are asked for as one run, from the first to the last, in increasing offsets after the changed chunks; the
    copy verifies and the summaries' unchanged bytes shrink by what was asked for."""
    monkeypatch.setattr(recvpipe, "MAX_REPAIR", 2)
    monkeypatch.setattr(recvpipe, "MAX_PASSES", 2)
    gen = begin(tmp_path, end=True, blocks_at=6)
    run = next(gen)
    try:
        assert run.asked == [(N, 1, [(3 * MIB, MIB), (5 * MIB, MIB)])]
        repair_changed(run)
        run.send(end_header(N + 3), epoch=1)
        run.wait(lambda: len(run.asked) == 2)
        assert run.asked[1] == (N + 3, 2, [(6 * MIB + 2 * B, 21 * B)])
        assert run.pipe.framelist.digest(6) == UNKNOWN
        run.send(rewind_header(N + 3, 2), epoch=1)
        run.send(pass_header(N + 3), epoch=2)
        run.block(N + 4, 6 * MIB + 2 * B, NEW6[2 * B : 23 * B], epoch=2)
        run.send(end_header(N + 5), epoch=2)
        run.wait(run.pipe.finished.is_set)
        assert run.pipe.crew.error is None
        assert run.pipe.framelist.digest(6) == digest(NEW6)
        checked = run.early.finish()
        assert not verify_ranges(
            run.pipe.target.read_path, run.pipe.framelist, on_progress=lambda *a: None, checked=checked
        ).mismatches
        assert run.path.read_bytes() == b"".join(NEW6 if i == 6 else SOURCE[i] for i in range(N))
        assert run.pipe.same_bytes == (N - len(CHANGED)) * MIB - 21 * B
    finally:
        gen.close()


def test_a_damaged_block_in_a_round_is_asked_for_again_and_the_round_goes_on(blocky: Run) -> None:
    """A run of blocks damaged on the way (its bytes fail their digest): asked for again within the round (a new
    epoch), it is written once, and the round ends with every range asked for."""
    run = blocky
    repair_changed(run)
    damaged = bytearray(NEW6[2 * B : 3 * B])
    damaged[100] ^= 0x40
    header = ChunkHeader(N + 3, 6 * MIB + 2 * B, B, B, Kind.DATA, Codec.RAW, digest(NEW6[2 * B : 3 * B]))
    run.send(header, bytes(damaged), 1)
    run.wait(lambda: run.resent)
    assert run.resent[0][:2] == (N + 3, 2)
    run.send(rewind_header(N + 3, 2), epoch=1)
    run.block(N + 3, 6 * MIB + 2 * B, NEW6[2 * B : 3 * B], epoch=2)
    run.block(N + 4, 6 * MIB + 9 * B, NEW6[9 * B : 10 * B], epoch=2)
    run.block(N + 5, 6 * MIB + 20 * B, NEW6[20 * B : 23 * B], epoch=2)
    run.send(end_header(N + 6), epoch=2)
    run.wait(run.pipe.finished.is_set)
    assert run.pipe.crew.error is None
    assert run.path.read_bytes() == b"".join(NEW6 if i == 6 else SOURCE[i] for i in range(N))
    assert run.pipe.framelist.digest(6) == digest(NEW6) and run.pipe.resends == 2


def test_the_read_back_of_a_blocks_chunk_reads_the_blocks_written_and_catches_one_gone_wrong(blocky: Run) -> None:
    """The chunk of a BLOCKS frame whose blocks the early check compared counts as checked; the read-back at the
    end reads exactly the blocks written into it, each against the source's digest of that block, so one that is
    not what was written on the target is found."""
    run = blocky
    repair_all(run)
    checked, reads = run.pipe.block_reads()
    assert checked == {6: (6 * MIB, MIB, True)}
    assert reads == [(6 * MIB + k * B, B, digest(NEW6[k * B : (k + 1) * B])) for k in (2, 9, 20, 21, 22)]
    checked = {**run.early.finish(), **checked}

    def mismatches() -> list[tuple[int, int]]:
        path, frames = run.pipe.target.read_path, run.pipe.framelist
        return verify_ranges(path, frames, on_progress=lambda *a: None, checked=checked, extra=reads).mismatches

    assert not mismatches()
    with open(run.path, "r+b") as f:
        f.seek(6 * MIB + 21 * B + 5)
        f.write(b"\x00")
    assert mismatches() == [(6 * MIB + 21 * B, B)]


def test_a_blocks_chunk_coarsened_or_not_compared_is_read_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks that matched are written too where the runs are coarsened: such a chunk is not counted as checked,
    and nothing of it is read as a block; the read-back reads it whole."""
    monkeypatch.setattr(recvpipe, "MAX_REPAIR", 2)
    monkeypatch.setattr(recvpipe, "MAX_PASSES", 2)
    gen = begin(tmp_path, end=True, blocks_at=6)
    run = next(gen)
    try:
        repair_changed(run)
        run.send(end_header(N + 3), epoch=1)
        run.wait(lambda: len(run.asked) == 2)
        assert run.pipe.block_reads() == ({}, [])
    finally:
        gen.close()
