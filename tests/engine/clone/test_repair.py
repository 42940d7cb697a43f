"""The sender's side of a delta's repair (capability "delta-repair"): what a receiver may ask to be sent
again. The receiver may be hostile: it may name only chunks sent as SAME and blocks of chunks sent as
BLOCKS, in order, each once, in a bounded number of rounds, and only with the capability. The loop is
built around a stand-in pipeline whose range checks are the real pipeline's (the check runs before
anything is read), the narrowest boundary; the e2e tests run the real repair between two processes."""

from __future__ import annotations

import os
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from recovery.engine.clone.chunks import Chunk, plan_chunks
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.level import LevelController
from recovery.engine.clone.recvpipe import rounds_needed
from recovery.engine.clone.send import _SendLoop
from recovery.engine.clone.sendpipe import Job, JobKind, SendPipeline, _Result
from recovery.engine.rescue.job import plan_jobs
from recovery.errors import RemoteProtocolError
from recovery.link.base import FdChannel
from recovery.protocol import messages as m
from recovery.protocol.frames import Kind
from recovery.protocol.limits import (
    DELTA_BLOCK,
    MAX_BLOCKS_BYTES,
    MAX_BLOCKS_FRAMES,
    MAX_PASSES,
    MAX_REPAIR_BYTES,
)
from recovery.protocol.pake import DataKeys

MIB = 1 << 20
CHUNKS = [Chunk(i, i * MIB, MIB) for i in range(8)]


class Pipe:
    """The pipeline's repair, with what it was sent: chunks 2..5 offered, 2, 3 and 5 sent as SAME, 4 as
    BLOCKS (its blocks may be asked for)."""

    def __init__(self) -> None:
        self.offered = FrameList()
        for c in CHUNKS[2:6]:
            self.offered.append(c.offset, c.length, bytes(32), Kind.DATA)
        self.real = sent_pipeline(same=[CHUNKS[2], CHUNKS[3], CHUNKS[5]], blocks=[CHUNKS[4]])
        self.asked: list[Any] = []
        self.blocks = False  # the receiver said it takes BLOCKS frames

    def repair(self, seq: int, epoch: int, ranges: list[tuple[int, int]], *, same: bool = True) -> int:
        jobs = [self.real._repair_job(0, o, n, same=same) for o, n in ranges]
        self.asked.append((seq, epoch, [j.chunk for j in jobs]))
        return len(jobs)


def sent_pipeline(same: list[Chunk], blocks: list[Chunk]) -> SendPipeline:
    """A pipeline (not started) that has sent ``same`` as SAME frames and ``blocks`` as BLOCKS frames."""
    pipe = object.__new__(SendPipeline)
    pipe._same_at = {c.offset: c for c in same}
    pipe._blocks_at = {c.offset: c for c in blocks}
    pipe._blocks_starts = sorted(pipe._blocks_at)
    pipe._repaired_upto = 0
    return pipe


def loop(caps: tuple[str, ...] = ("resend", "delta", "delta-repair"), mode: str = "used") -> _SendLoop:
    run = object.__new__(_SendLoop)
    run.pipe = Pipe()  # type: ignore[assignment]
    run.ctl = SimpleNamespace(state=SimpleNamespace(shared_caps=frozenset(caps)))  # type: ignore[assignment]
    run.clone = SimpleNamespace(chunks=CHUNKS, the_plan=SimpleNamespace(mode=mode))  # type: ignore[assignment]
    run.sink = lambda event: None
    run.repairs, run.epoch, run.done_sent = 0, 0, True
    return run


def resend(*ranges: tuple[int, int]) -> m.Resend:
    return m.Resend(seq=8, epoch=1, reason="changed", repair=tuple(m.Range(o, n) for o, n in ranges))


def test_the_chunks_asked_for_are_sent_again_once() -> None:
    run = loop()
    run._resend(resend((2 * MIB, MIB), (5 * MIB, MIB)))
    [(seq, epoch, chunks)] = run.pipe.asked  # type: ignore[attr-defined]
    assert (seq, epoch, chunks) == (8, 1, [CHUNKS[2], CHUNKS[5]])
    assert (run.epoch, run.done_sent) == (1, False)
    with pytest.raises(RemoteProtocolError, match="again"):
        run._resend(resend((5 * MIB, MIB)))  # each once


def test_repair_rounds_are_bounded() -> None:
    """One round per pass a clone may have, at most."""
    run = loop()
    run.repairs = MAX_PASSES
    with pytest.raises(RemoteProtocolError, match="rounds of repair"):
        run._resend(resend((2 * MIB, MIB)))


def test_the_blocks_of_a_blocks_frame_are_sent_once_each() -> None:
    """Capability "delta-blocks": whole blocks of a chunk sent as BLOCKS, on its grid, with its holes, a run
    of them as one; never a range asked for before."""
    holed = Chunk(4, 4 * MIB, MIB, holes=((DELTA_BLOCK + 100, 200),))
    b = DELTA_BLOCK
    job = sent_pipeline(same=[], blocks=[holed])._repair_job(9, 4 * MIB + b, b)
    assert (job.seq, job.kind, job.chunk) == (9, JobKind.PATCH, Chunk(4, 4 * MIB + b, b, ((100, 200),)))
    pipe = sent_pipeline(same=[], blocks=[holed, Chunk(7, 7 * MIB, MIB - 4096)])
    assert pipe._repair_job(9, 4 * MIB, 3 * b).chunk == holed.part(0, 3 * b)  # a run
    last = 7 * MIB + MIB - b
    assert pipe._repair_job(10, last, b - 4096).chunk == Chunk(7, last, b - 4096)  # the chunk's short last
    for offset, length in [
        (4 * MIB + b, b),  # asked before
        (7 * MIB, b),  # before a range asked for: rounds go in increasing offsets
    ]:
        with pytest.raises(RemoteProtocolError, match="again"):
            pipe._repair_job(11, offset, length)
    for offset, length in [
        (4 * MIB + 4096, b),  # off the block grid
        (4 * MIB, b - 4096),  # not a whole block
        (7 * MIB + MIB - 2 * b, 2 * b),  # past the chunk's end
        (5 * MIB, b),  # between the chunks
    ]:
        fresh = sent_pipeline(same=[], blocks=[holed, Chunk(7, 7 * MIB, MIB - 4096)])
        with pytest.raises(RemoteProtocolError, match="nor whole blocks"):
            fresh._repair_job(11, offset, length)
    assert sent_pipeline(same=[], blocks=[holed])._repair_job(1, 4 * MIB, MIB).chunk == holed  # all of it


def test_no_repair_in_exact_mode_nor_beyond_the_senders_window() -> None:
    """Exact mode reads no chunk back early (no honest receiver asks); more than MAX_REPAIR_BYTES would make
    every later resend read them all again."""
    with pytest.raises(RemoteProtocolError, match="does not allow"):
        loop(mode="exact")._resend(resend((2 * MIB, MIB)))
    blocky = loop(mode="exact")  # but BLOCKS frames' blocks are asked for in both modes
    blocky.pipe.blocks = True  # type: ignore[attr-defined]
    blocky._resend(resend((4 * MIB, DELTA_BLOCK)))
    hostile = loop(mode="exact")  # and only those: no SAME chunk is read back early there either
    hostile.pipe.blocks = True  # type: ignore[attr-defined]
    with pytest.raises(RemoteProtocolError, match="nor whole blocks"):
        hostile._resend(resend((2 * MIB, MIB)))
    with pytest.raises(RemoteProtocolError, match="more than"):
        loop()._resend(m.Resend(seq=8, epoch=1, repair=(m.Range(2 * MIB, MAX_REPAIR_BYTES + 1),)))


def test_a_repair_or_resend_of_frames_not_sent_yet_is_refused() -> None:
    """The review's finding: the END was in the sender's history before it was sent (a receiver that stops
    reading sees to that); a repair there made the sender skip the frames between and fail on an assert."""
    chunks = list(plan_chunks([(0, 6 * MIB)], MIB))
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    pipe = SendPipeline(
        lambda job, view: view.__setitem__(slice(None), os.urandom(len(view))),
        plan_jobs(chunks, len(chunks), 0),
        FdChannel(ours.fileno(), owner=ours),
        chunk_size=MIB,
        levels=LevelController(0),
        keys=DataKeys(header=bytes(32), payload=bytes(32)),
        encrypted=False,
    )
    pipe.start()
    try:
        end = len(chunks)
        deadline = time.monotonic() + 20
        while end not in pipe._history:  # read and queued, not sent: nobody reads the other end
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(RemoteProtocolError, match="not the END sent"):
            pipe.repair(end, 1, [(chunks[-1].offset, chunks[-1].length)])
        with pytest.raises(RemoteProtocolError, match="no longer holds"):
            pipe.rewind(end - 1, 1)
    finally:
        pipe.close()
        theirs.close()


@pytest.mark.parametrize(
    "caps, ranges, said",
    [
        (("resend", "delta"), [(2 * MIB, MIB)], "does not allow"),  # no capability
        (None, [(1 * MIB, MIB)], "not a chunk"),  # a chunk sent as DATA: nothing to repair
        (None, [(2 * MIB, 4096)], "not a chunk"),  # not a chunk's range
        (None, [(4 * MIB, MIB), (2 * MIB, MIB)], "not in order"),
        (None, [(2 * MIB, MIB), (2 * MIB, MIB)], "not in order"),
    ],
)
def test_a_receiver_asks_only_for_what_it_offered(
    caps: tuple[str, ...] | None, ranges: list[tuple[int, int]], said: str
) -> None:
    run = loop(caps) if caps else loop()
    with pytest.raises(RemoteProtocolError, match=said):
        run._resend(resend(*ranges))
    assert run.pipe.asked == []  # type: ignore[attr-defined]


def test_the_blocks_frames_fit_the_rounds_of_repair() -> None:
    """The review's finding: the sender's budget of BLOCKS frames counted frames only, so a delta of a large disk
    changed wholly (every block of each BLOCKS chunk differing) needed more rounds of repair than a clone may
    have, for its bytes: the rest was never sent and the read-back failed. Now what it sends as BLOCKS fits the
    rounds (their ranges and bytes alike, one round to spare); beyond it a chunk goes as DATA."""
    ours, theirs = socket.socketpair()
    pipe = SendPipeline(
        lambda job, view: None,
        iter(()),
        FdChannel(ours.fileno(), owner=ours),
        chunk_size=16 * MIB,
        levels=LevelController(0),
        keys=DataKeys(header=bytes(32), payload=bytes(32)),
        encrypted=False,
        blocks=True,
    )
    try:
        for size in (16 * MIB, 64 << 10):
            pipe._blocks_left, pipe._blocks_bytes_left = MAX_BLOCKS_FRAMES, MAX_BLOCKS_BYTES
            count = 0
            while pipe._take_blocks(size):
                count += 1
            assert rounds_needed(count, count * size) <= MAX_PASSES - 2, size  # one range each, coarsened
    finally:
        pipe.close()
        theirs.close()


def test_going_back_over_many_blocks_frames_is_quick() -> None:
    """The review's finding: going back (a resend) removed each BLOCKS frame it dropped from the sorted list of
    their offsets one by one, a scan of the whole list each: with small chunks, minutes under the pipeline's
    lock for a receiver that asks for frames again. Now the list's tail goes at once, and stays in order."""
    count, kept = 200_000, 150_000
    chunks = [Chunk(i, i * 65536, 65536) for i in range(count)]
    pipe = sent_pipeline(same=[], blocks=chunks)
    pipe._lock = threading.Lock()
    pipe.framelist = FrameList()
    for c in chunks:
        pipe.framelist.append(c.offset, c.length, bytes(32), Kind.DATA)
    pipe.same_bytes, pipe.image_hasher, pipe._image_at = count * 65536, None, {}
    pipe._sent = {
        c.seq: _Result(Job(c.seq, JobKind.CHUNK, c), None, b"", None, Kind.BLOCKS, b"") for c in chunks[kept:]
    }
    started = time.monotonic()
    pipe._went_back(kept)
    assert time.monotonic() - started < 2
    assert pipe._blocks_starts == sorted(pipe._blocks_at) == [c.offset for c in chunks[:kept]]
    assert pipe.same_bytes == kept * 65536 and len(pipe.framelist) == kept
