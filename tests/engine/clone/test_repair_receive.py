"""The receiver's side of a delta's repair: a real ReceivePipeline, EarlyCheck and file target, and a
scripted sender on a socket pair. Chunks 3 and 5 of the target changed under the record: the receiver
finds them, asks for them at the END, takes them again only with their SAME frame's digest and only once,
and until they are written again its journal never says the target holds them."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

from recovery.engine.clone.earlycheck import EarlyCheck
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.readback import verify_ranges
from recovery.engine.clone.recvpipe import UNKNOWN, DurablePoint, ReceivePipeline
from recovery.engine.clone.target import Target
from recovery.errors import RemoteProtocolError
from recovery.link.base import FdChannel
from recovery.protocol.frames import (
    ChunkHeader,
    Codec,
    FrameLimits,
    Kind,
    encode_header,
    end_header,
    pass_header,
    rewind_header,
)
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

    def send(self, h: ChunkHeader, payload: bytes = b"", epoch: int = 0) -> None:
        self.out.sendall(encode_header(h, KEYS.for_epoch(epoch).header) + payload)

    def data(self, seq: int, index: int, data: bytes, epoch: int = 1) -> None:
        self.send(ChunkHeader(seq, index * MIB, MIB, MIB, Kind.DATA, Codec.RAW, digest(data)), data, epoch)

    def wait(self, done: object, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while not done() and self.pipe.crew.error is None:  # type: ignore[operator]
            assert time.monotonic() < deadline
            time.sleep(0.02)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """The first pass sent (SAME frames for all), its END too, and the receiver's repair request in."""
    yield from begin(tmp_path, end=True)


@pytest.fixture
def unended(tmp_path: Path) -> Iterator[Run]:
    """The first pass sent, and no END: the early check finds the changed chunks meanwhile."""
    yield from begin(tmp_path, end=False)


def begin(tmp_path: Path, *, end: bool) -> Iterator[Run]:
    path = tmp_path / "target.img"
    path.write_bytes(b"".join(os.urandom(MIB) if i in CHANGED else SOURCE[i] for i in range(N)))
    offered = FrameList()
    for i in range(N):
        offered.append(i * MIB, MIB, digest(SOURCE[i]), Kind.DATA)
    target = Target(str(path))
    limits = FrameLimits(MIB, N * MIB, header_key=KEYS.header, frames=N, bytes=N * MIB, rewinds=True,
                         passes=True, offered=offered)  # fmt: skip
    early = EarlyCheck(target.read_path, MIB)
    ours, theirs = socket.socketpair()
    holder: list[Run] = []
    pipe = ReceivePipeline(
        FdChannel(ours.fileno(), owner=ours),
        target,
        limits=limits,
        keys=KEYS,
        on_durable=lambda point: None,
        on_resend=lambda *a: None,
        early=early,
        on_repair=lambda seq, epoch, ranges: holder[0].asked.append((seq, epoch, ranges)),
        passes_expected=False,
    )
    holder.append(Run(pipe, early, theirs, path))
    early.start()
    pipe.start()
    for i in range(N):
        holder[0].send(ChunkHeader(i, i * MIB, MIB, 0, Kind.SAME, Codec.RAW, digest(SOURCE[i])))
    if end:
        holder[0].send(end_header(N))
        holder[0].wait(lambda: holder[0].asked)
    yield holder[0]
    pipe.crew.shutdown()
    early.close()
    theirs.close()


def test_the_changed_chunks_are_asked_for_and_the_copy_verifies(run: Run) -> None:
    assert run.asked == [(N, 1, [(3 * MIB, MIB), (5 * MIB, MIB)])]
    run.send(rewind_header(N, 1))
    run.send(pass_header(N), epoch=1)
    run.data(N + 1, 3, SOURCE[3])
    run.data(N + 2, 5, SOURCE[5])
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
