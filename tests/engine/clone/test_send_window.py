"""The sender reads at most a window ahead of the receiver's acknowledgements: everything not
acknowledged is remembered for a resend, so a receiver that never acks must stall the clone, not make
the sender remember the whole disk. A real SendPipeline over a real socket pair; the far end reads
the frames and never acks (the window is made small so the test moves few bytes)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable

import pytest

from recovery.engine.clone import sendpipe
from recovery.engine.clone.chunks import plan_chunks
from recovery.engine.clone.level import LevelController
from recovery.engine.rescue.job import plan_jobs
from recovery.link.base import FdChannel
from recovery.protocol.pake import DataKeys
from tests.helpers import wait_until

MIB = 1 << 20


def stalled(pipe: sendpipe.SendPipeline, read_bytes: Callable[[], int], timeout: float = 20.0) -> int:
    """``read_bytes()`` once the sender is held at its window: the bytes not acknowledged fill it and its
    read thread waits for an acknowledgement (so it reads nothing more until one comes)."""
    reader = next(t for t in pipe.crew.threads if t.name == "send-read")

    def waits_for_acks() -> bool:
        frame = sys._current_frames().get(reader.ident or 0)
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        return names[:2] == ["wait", "_room_ahead"]  # innermost first: the condition's wait, in _room_ahead

    wait_until(
        lambda: pipe._history_bytes >= sendpipe.UNACKED_BYTES and waits_for_acks(),
        timeout,
        "the sender to stall at its window",
    )
    return read_bytes()


def test_a_receiver_that_never_acknowledges_stalls_the_sender_at_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
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
    pipe = sendpipe.SendPipeline(
        read,
        plan_jobs(chunks, len(chunks), 0),
        FdChannel(ours.fileno(), owner=ours),
        chunk_size=MIB,
        levels=LevelController(0),
        image=None,
        keys=DataKeys(header=bytes(32), payload=bytes(32)),
        encrypted=False,
        workers=2,
    )
    try:
        pipe.start()
        assert 8 * MIB <= stalled(pipe, lambda: read_bytes) <= 9 * MIB  # the window, and the chunk that filled it
        pipe.acked(4)  # the receiver acknowledges the first 4 frames: 4 MiB more may be read
        assert 12 * MIB <= stalled(pipe, lambda: read_bytes) <= 13 * MIB
        pipe.acked(len(chunks))  # all it has sent: another window's worth, no more
        assert 20 * MIB <= stalled(pipe, lambda: read_bytes) <= 21 * MIB
    finally:
        pipe.close()
        ours.close()
        theirs.close()
