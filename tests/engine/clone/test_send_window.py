"""The sender reads at most a window ahead of the receiver's acknowledgements: everything not
acknowledged is remembered for a resend, so a receiver that never acks must stall the clone, not make
the sender remember the whole disk. A real SendPipeline over a real socket pair; the far end reads
the frames and never acks (the window is made small so the test moves few bytes)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from recovery.engine.clone import sendpipe
from recovery.engine.clone.chunks import plan_chunks
from recovery.engine.clone.level import LevelController
from recovery.engine.rescue.job import plan_jobs
from recovery.link.base import FdChannel
from recovery.protocol.pake import DataKeys

MIB = 1 << 20


def settled(value: Callable[[], int], timeout: float = 20.0) -> int:
    """``value()`` once it stopped changing for half a second."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 0.5:
            return now
    raise AssertionError("it never settled")


def test_a_receiver_that_never_acknowledges_stalls_the_sender_at_the_window(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    monkeypatch.setattr(sendpipe, "UNACKED_BYTES", 8 * MIB)
    chunks = list(plan_chunks([(0, 64 * MIB)], MIB))
    read_bytes = 0

    def read(job: sendpipe.Job, view: memoryview) -> None:
        nonlocal read_bytes
        view[:] = os.urandom(len(view))  # data that does not compress and is never all zeros
        read_bytes += len(view)

    ours, theirs = socket.socketpair()
    drained = threading.Event()

    def drain() -> None:  # the receiver reads every frame and never acknowledges
        while theirs.recv(1 << 20):
            pass
        drained.set()

    threading.Thread(target=drain, daemon=True).start()
    pipe = sendpipe.SendPipeline(read, plan_jobs(chunks, len(chunks), 0), FdChannel(ours.fileno(), owner=ours),
                                 chunk_size=MIB, levels=LevelController(0), image=None,
                                 keys=DataKeys(header=bytes(32), payload=bytes(32)), encrypted=False, workers=2)
    try:
        pipe.start()
        stalled = settled(lambda: read_bytes)
        assert 8 * MIB <= stalled <= 9 * MIB  # the window, and the chunk that filled it
        pipe.acked(4)  # the receiver acknowledges the first 4 frames: 4 MiB more may be read
        assert 12 * MIB <= settled(lambda: read_bytes) <= 13 * MIB
        pipe.acked(len(chunks))  # all it has sent: another window's worth, no more
        assert 20 * MIB <= settled(lambda: read_bytes) <= 21 * MIB
    finally:
        pipe.close()
        ours.close()
        theirs.close()
