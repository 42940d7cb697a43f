"""A delta clone's unchanged chunks, read back while the stream goes on.

A SAME frame says the target holds a chunk as the source has it; nothing is written there in this
clone. So its read-back need not wait for the end: one thread reads each such range past the page
cache and compares it with the digest the sender computed from the source (never the receiver's
record), while the sender reads and hashes the rest; when it falls behind, the stream waits for it,
so the two disks are read in step. The read-back after the stream then reads only what was written
(:func:`recovery.engine.clone.readback.verify_ranges`). A range a later pass replaces is forgotten
(read back at the end like any written one), and so is one this thread could not read: nothing counts
as checked that was not.

A BLOCKS frame's chunk (capability "delta-blocks") is read here too, before anything is written there:
its blocks are hashed and compared with the source's, so the receiver asks at the END for those that
differ (:meth:`EarlyCheck.differing`). Only those are written, so the read-back at the end reads only
them, each against its block digest (:meth:`~recovery.engine.clone.recvpipe.ReceivePipeline.block_reads`).
"""

from __future__ import annotations

import array
import hmac
import mmap
import queue
import threading

import blake3

from recovery.engine.clone.readback import ALIGN, THREADS, DirectReader
from recovery.errors import VerificationError
from recovery.protocol import blocks

QUEUED = 64  # ranges waiting at most: then the stream waits for this thread, both sides read in step


class EarlyCheck:
    """Reads back the ranges of SAME frames of the target at ``path`` (chunks of at most ``longest``)."""

    def __init__(self, path: str, longest: int) -> None:
        self.reader = DirectReader(path)
        self.buf = mmap.mmap(-1, longest + 2 * ALIGN)
        self.waiting: queue.Queue[tuple[int, int, int, bytes | list[bytes]] | None] = queue.Queue(QUEUED)
        self.checked: dict[int, tuple[int, int, bool]] = {}  # frame index -> (offset, length, matched)
        # a BLOCKS frame's index -> its blocks that differ: their numbers, and their digests joined (compact: a
        # clone may have hundreds of thousands)
        self._differing: dict[int, tuple[array.array[int], bytes]] = {}
        self._forgotten: set[int] = set()
        self._closed = False
        self._finished = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="early-check", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, index: int, offset: int, length: int, digest: bytes | list[bytes]) -> None:
        """Frame ``index`` holds the target's own bytes: check them when this thread gets to it (wait
        while it has :data:`QUEUED` ranges to do; if it stopped, the read-back at the end reads them).
        ``digest``: the source's, or for a BLOCKS frame the source's digest of each block."""
        while not self._stop.is_set() and self._thread.is_alive():
            try:
                self.waiting.put((index, offset, length, digest), timeout=0.2)
                return
            except queue.Full:
                continue

    def changed(self) -> list[tuple[int, int, int]]:
        """The frames found so far whose bytes on the target differ from the source: (index, offset, length)."""
        with self._lock:
            return [(i, o, n) for i, (o, n, same) in self.checked.items() if not same and i not in self._forgotten]

    def differing(self, index: int) -> dict[int, bytes] | None:
        """Which blocks of BLOCKS frame ``index`` differ on the target (numbers, from 0: the source's digest of
        each), or None when they were not compared (unreadable, or this thread stopped): then all of them count
        as differing."""
        with self._lock:
            kept = self._differing.get(index)
        if kept is None:
            return None
        numbers, digests = kept
        size = blocks.DIGEST
        return {k: digests[i * size : (i + 1) * size] for i, k in enumerate(numbers)}

    def forget(self, index: int) -> None:
        """Frame ``index`` was written after all (a later pass): the end's read-back checks it."""
        with self._lock:
            self.checked.pop(index, None)
            self._forgotten.add(index)

    def finish(self) -> dict[int, tuple[int, int, bool]]:
        """Stop taking ranges, check those waiting, and say what was checked (again: what is checked and not
        forgotten since)."""
        if not self._finished:
            while self._thread.is_alive():
                try:
                    self.waiting.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self.close()
            self.buf.close()
            self._finished = True
        with self._lock:
            return {i: r for i, r in self.checked.items() if i not in self._forgotten}

    def close(self) -> None:
        """Whatever happened: the thread stops and the target is let go."""
        self._stop.set()
        if self._thread.is_alive():
            try:
                self.waiting.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(10)
        if not self._thread.is_alive() and not self._closed:
            self._closed = True
            self.reader.close()

    def _run(self) -> None:
        try:
            self._check_all()
        finally:
            self._stop.set()  # an unexpected error too: what is left is read back at the end

    def _check_all(self) -> None:
        view = memoryview(self.buf)
        while not self._stop.is_set() and (item := self.waiting.get()) is not None:
            index, offset, length, digest = item
            try:
                got = self.reader.read(view, offset, length)
            except VerificationError:
                continue  # unreadable now: the read-back at the end says so
            if isinstance(digest, list):
                held = memoryview(blocks.digests_of(got))
                del got
                size = blocks.DIGEST
                differ = [k for k, d in enumerate(digest) if not hmac.compare_digest(held[k * size :][:size], d)]
                kept = (array.array("H", differ), b"".join(digest[k] for k in differ))
                with self._lock:
                    self._differing[index] = kept
                continue
            matched = hmac.compare_digest(blake3.blake3(got, max_threads=THREADS).digest(), digest)
            del got
            with self._lock:
                if index not in self._forgotten:
                    self.checked[index] = (offset, length, matched)
