"""The sender's side of a delta's repair (capability "delta-repair"): what a receiver may ask to be sent
again. The receiver may be hostile: it may name only chunks it offered (sent as SAME), in order, once per
clone, and only with the capability. The loop is built around a stand-in pipeline (the check runs before
anything is read), the narrowest boundary; the e2e tests run the real repair between two processes."""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest

from recovery.engine.clone.chunks import Chunk, plan_chunks
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.level import LevelController
from recovery.engine.clone.send import _SendLoop
from recovery.engine.clone.sendpipe import SendPipeline
from recovery.engine.rescue.job import plan_jobs
from recovery.errors import RemoteProtocolError
from recovery.link.base import FdChannel
from recovery.protocol import messages as m
from recovery.protocol.frames import Kind
from recovery.protocol.limits import MAX_REPAIR_BYTES
from recovery.protocol.pake import DataKeys

MIB = 1 << 20
CHUNKS = [Chunk(i, i * MIB, MIB) for i in range(8)]


class Pipe:
    def __init__(self) -> None:
        self.offered = FrameList()
        for c in CHUNKS[2:6]:  # the receiver offered chunks 2..5
            self.offered.append(c.offset, c.length, bytes(32), Kind.DATA)
        self.asked: list[Any] = []

    def repair(self, seq: int, epoch: int, chunks: list[Chunk]) -> None:
        self.asked.append((seq, epoch, chunks))


def loop(caps: tuple[str, ...] = ("resend", "delta", "delta-repair"), mode: str = "used") -> _SendLoop:
    run = object.__new__(_SendLoop)
    run.pipe = Pipe()  # type: ignore[assignment]
    run.ctl = SimpleNamespace(state=SimpleNamespace(shared_caps=frozenset(caps)))  # type: ignore[assignment]
    run.clone = SimpleNamespace(chunks=CHUNKS, the_plan=SimpleNamespace(mode=mode))  # type: ignore[assignment]
    run.sink = lambda event: None
    run.repaired, run.epoch, run.done_sent = False, 0, True
    return run


def resend(*ranges: tuple[int, int]) -> m.Resend:
    return m.Resend(seq=8, epoch=1, reason="changed", repair=tuple(m.Range(o, n) for o, n in ranges))


def test_the_chunks_asked_for_are_sent_again_once() -> None:
    run = loop()
    run._resend(resend((2 * MIB, MIB), (5 * MIB, MIB)))
    [(seq, epoch, chunks)] = run.pipe.asked  # type: ignore[attr-defined]
    assert (seq, epoch, chunks) == (8, 1, [CHUNKS[2], CHUNKS[5]])
    assert (run.epoch, run.done_sent) == (1, False)
    with pytest.raises(RemoteProtocolError, match="does not allow"):
        run._resend(resend((3 * MIB, MIB)))  # at most once per clone


def test_no_repair_in_exact_mode_nor_beyond_the_senders_window() -> None:
    """Exact mode reads no chunk back early (no honest receiver asks); more than MAX_REPAIR_BYTES would make
    every later resend read them all again."""
    with pytest.raises(RemoteProtocolError, match="does not allow"):
        loop(mode="exact")._resend(resend((2 * MIB, MIB)))
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
            pipe.repair(end, 1, [chunks[-1]])
        with pytest.raises(RemoteProtocolError, match="no longer holds"):
            pipe.rewind(end - 1, 1)
    finally:
        pipe.close()
        theirs.close()


@pytest.mark.parametrize(
    "caps, ranges, said",
    [
        (("resend", "delta"), [(2 * MIB, MIB)], "does not allow"),  # no capability
        (None, [(1 * MIB, MIB)], "never offered"),  # a chunk sent as DATA: nothing to repair
        (None, [(2 * MIB, 4096)], "never offered"),  # not a chunk's range
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
