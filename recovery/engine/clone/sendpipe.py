"""The sender's pipeline: read -> hash and compress -> send, overlapped.

One reader thread fills buffers from a fixed pool; worker threads hash each
chunk with BLAKE3 (a chunk whose digest is the all-zeros digest becomes a
ZERO frame, so zero detection costs nothing extra; in a delta clone, one whose
range and digest the receiver offered becomes a SAME frame, and one the receiver
offered in another version a BLOCKS frame: the digests of its 16 KiB blocks, of
which the receiver asks at the END for those that differ) and compress it with zstd
at the level the controller picks (raw when it does not shrink); one sending
thread writes frames in order, records them and returns the buffer to the
pool. The workers also make each frame's header (with its MAC under the
clone's header key) and, when the plan says so, seal the payload with
AES-256-GCM into a second pooled buffer. BLAKE3, zstd and AES-GCM release
the GIL, so the stages run in parallel.

What to send comes as :class:`Job` items: the first pass's chunks (from any
frame on, for a resume), in rescue mode PASS markers and replacement chunks,
and one END. The pipeline keeps the jobs the receiver has not acknowledged,
so when the receiver asks for frame ``k`` again (:meth:`SendPipeline.rewind`)
the sending thread writes a REWIND frame, and reading, hashing and sending
start again at ``k`` under the new epoch's keys; results of the old epoch
still in the workers are dropped.
"""

from __future__ import annotations

import bisect
import enum
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.engine.clone.chunks import Chunk
from recovery.engine.clone.framelist import FrameList, Recorded
from recovery.engine.clone.level import MIN_SAVING, RAW, LevelController
from recovery.engine.clone.pipeline import BufferPool, Crew, Meter, Pipe, Reorder, Stopped, pool_count
from recovery.errors import RemoteProtocolError
from recovery.link.base import Channel
from recovery.protocol import blocks
from recovery.protocol.frames import (
    TAG_SIZE,
    ChunkHeader,
    Codec,
    Kind,
    encode_header,
    end_header,
    pass_header,
    rewind_header,
    seal_payload,
    zero_digest,
    zstd_bound,
)
from recovery.protocol.limits import DELTA_BLOCK, MAX_BLOCKS_BYTES, MAX_BLOCKS_FRAMES
from recovery.protocol.pake import DataKeys

# Read ahead of the receiver's acknowledgements (it acks at least every 256 MiB or 2 s) by at most this
# much: what is not acknowledged is remembered for a resend, so a receiver that never acks must not make
# this side remember the whole disk.
UNACKED_BYTES = 1 << 30
UNACKED_FRAMES = 1 << 17


class JobKind(enum.Enum):
    CHUNK = "chunk"  # a chunk of the first pass
    REPLACE = "replace"  # a later pass's chunk, replacing the first pass's frame for it
    PATCH = "patch"  # blocks of a chunk sent as BLOCKS that differ on the target (a repair round)
    PASS = "pass"
    END = "end"


@dataclass(frozen=True, slots=True)
class Job:
    seq: int  # the frame's number
    kind: JobKind
    chunk: Chunk | None = None  # a PATCH's: its blocks, a part of their chunk


Reader = Callable[[Job, memoryview], Any]  # fills the chunk's bytes; what it returns travels with the frame


@dataclass
class _Result:
    job: Job
    buf: object | None  # pool buffer to return, None for ZERO frames and markers
    header: bytes
    payload: memoryview | bytes | None
    kind: Kind
    digest: bytes
    note: Any = None  # what the reader said about the chunk (rescue: its statuses)
    sealed: object | None = None  # the sealed payload's pool buffer, to return


class SendPipeline(Recorded):
    def __init__(
        self,
        read: Reader,
        jobs: Iterator[Job],
        channel: Channel,
        *,
        chunk_size: int,
        levels: LevelController,
        image: Any = None,
        keys: DataKeys,
        encrypted: bool,
        workers: int = 2,
        frames: FrameList | None = None,
        offered: FrameList | None = None,
        blocks: bool = False,
    ) -> None:
        """``frames``: the first-pass frames the target holds already (a resume starts after them).
        ``image``: a BLAKE3 hasher fed the whole image in order (exact mode), or None. ``offered``: a
        delta's, what the target holds of an earlier clone: a chunk found there, same range and digest,
        goes as a SAME frame. ``blocks``: the receiver takes BLOCKS frames for chunks it offered that
        differ (capability "delta-blocks")."""
        self.read = read
        self.plan_jobs = jobs
        self.channel = channel
        self.levels = levels
        self.workers = workers
        self.keys = keys
        self.encrypted = encrypted
        self.crew = Crew("send")
        self.crew.on_fail.append(channel.abort)
        sealed_size = zstd_bound(chunk_size) + TAG_SIZE
        count = pool_count(workers, sealed_size)  # the same for both pools: a chunk holds one of each
        self.pool = BufferPool(self.crew, count, chunk_size)
        # Sealed payloads: raw or compressed, plus the tag.
        self.sealed_pool = BufferPool(self.crew, count, sealed_size) if encrypted else None
        self.jobs: Pipe[tuple[int, Job, object, Any] | None] = Pipe(self.crew, workers * 2)
        self.results: Reorder[tuple[int, int], _Result] = Reorder(self.crew)
        self.inflight = threading.BoundedSemaphore(workers * 8 + 16)
        self.framelist = frames or FrameList()
        self.offered = offered
        self.blocks = blocks
        self._blocks_left = MAX_BLOCKS_FRAMES  # BLOCKS frames this clone may send more
        self._blocks_bytes_left = MAX_BLOCKS_BYTES  # ... and the bytes of their chunks
        self.same_bytes = 0  # bytes of chunks the target held already (SAME frames)
        # exact mode: the whole image, hashed in order on the sending thread, over the cores
        self.image_hasher = image
        self.read_meter = Meter()
        self.work_meter = Meter()
        self.sent_bytes = 0  # bytes of chunks sent in this run (all passes, resends included)
        self.zero_bytes = 0
        self.replaced = 0
        self.resends = 0
        self.finished = threading.Event()  # the END of epoch ``finished_epoch`` is sent
        self.finished_epoch = -1
        self._zeros = memoryview(bytes(chunk_size))
        self._lock = threading.Lock()
        self._history: dict[int, Job] = {}  # jobs the receiver has not acknowledged
        self._history_bytes = 0  # the bytes their chunks cover
        self._acks = threading.Condition(self._lock)  # notified when the receiver acknowledges
        self._sent: dict[int, _Result] = {}  # ... and what was sent for them (the reader's notes)
        self._image_at: dict[int, Any] = {}  # the image hasher before each unacknowledged frame
        self._acked = 0
        self._sent_upto = 0  # frames before it were handed to the link in the current epoch
        self._same_at: dict[int, Chunk] = {}  # chunks sent as SAME, by offset (a repair may name these)
        self._blocks_at: dict[int, Chunk] = {}  # chunks sent as BLOCKS, by offset
        self._blocks_starts: list[int] = []  # ... their offsets, in order
        self._repaired_upto = 0  # repair ranges come in increasing offsets, round after round: each once
        self._gen = 0  # the read thread's epoch
        self._request: tuple[int, int] | None = None  # (seq, epoch) the receiver asked for
        self._replay: tuple[int, int] | None = None  # the read thread's copy of it
        self._closed = threading.Event()

    # --- called by the session ---

    def start(self) -> None:
        self.crew.spawn(self._read_loop, name="read")
        for i in range(self.workers):
            self.crew.spawn(self._work, name=f"work{i}")
        self.crew.spawn(self._send, name="net")

    def rewind(self, seq: int, epoch: int) -> None:
        """The receiver asks for frame ``seq`` again, under ``epoch``'s keys (one this side has sent)."""
        with self._lock:
            if seq < self._acked or seq >= self._sent_upto or seq not in self._history:
                raise RemoteProtocolError(f"the receiver asked for frame {seq} again, which this side no longer holds")
            self._request = self._replay = (seq, epoch)
            self.resends += 1
        self.finished.clear()
        self.results.wake()

    def repair(self, seq: int, epoch: int, ranges: list[tuple[int, int]], *, same: bool = True) -> int:
        """A repair round: the receiver found these ranges differing on its target, each a chunk sent as SAME
        (where ``same``: the receiver read them back early) or a block of one sent as BLOCKS (in increasing
        offsets). Frame ``seq`` (the END) and on become a
        pass that sends each in full, then the END again, under ``epoch``'s keys. How many chunks sent as SAME
        it sends again (a resend: the target changed since its record; blocks are a BLOCKS frame's due)."""
        with self._lock:
            end = self._history.get(seq)
            if end is None or end.kind is not JobKind.END or seq < self._acked or self._sent_upto != seq + 1:
                raise RemoteProtocolError(f"the receiver asked for a repair at frame {seq}, which is not the END sent")
            jobs = [Job(seq, JobKind.PASS)]
            for offset, length in ranges:
                jobs.append(self._repair_job(seq + len(jobs), offset, length, same=same))
            jobs.append(Job(seq + len(jobs), JobKind.END))
            for job in jobs:
                self._history[job.seq] = job
                self._history_bytes += job.chunk.length if job.chunk is not None else 0
            self._request = self._replay = (seq, epoch)
            again = sum(job.kind is JobKind.REPLACE for job in jobs)
            self.resends += 1 if again else 0
            self.same_bytes -= sum(n for _, n in ranges)  # not unchanged after all: they are sent
        self.finished.clear()
        self.results.wake()
        return again

    def _repair_job(self, seq: int, offset: int, length: int, *, same: bool = True) -> Job:
        """What a repair range asks for: a chunk this side sent as SAME (only where ``same``), or a run of whole
        blocks of one it sent as BLOCKS, past every range asked for before; RemoteProtocolError for anything
        else."""
        if offset < self._repaired_upto or length <= 0:
            raise RemoteProtocolError(f"the receiver asked for the repair of bytes {offset}+{length} again, or none")
        self._repaired_upto = offset + length
        held = self._same_at.pop(offset, None) if same else None
        if held is not None and held.length == length:
            return Job(seq, JobKind.REPLACE, held)
        at = bisect.bisect_right(self._blocks_starts, offset) - 1
        chunk = self._blocks_at[self._blocks_starts[at]] if at >= 0 else None
        if (
            chunk is None
            or (offset - chunk.offset) % DELTA_BLOCK
            or offset + length > chunk.end
            or (length % DELTA_BLOCK and offset + length != chunk.end)
        ):
            raise RemoteProtocolError(
                f"the receiver asked for the repair of bytes {offset}+{length}: not a chunk this side sent as SAME, "
                "nor whole blocks of one it sent as BLOCKS"
            )
        return Job(seq, JobKind.PATCH, chunk.part(offset - chunk.offset, length))

    def acked(self, seq: int) -> list[_Result]:
        """Frames before ``seq`` are durable: forget them; what was sent for them, in order."""
        with self._lock:
            done = [self._sent.pop(s) for s in sorted(k for k in self._sent if k < seq)]
            for s in [k for k in self._history if k < seq]:
                chunk = self._history.pop(s).chunk
                self._history_bytes -= chunk.length if chunk is not None else 0
            for s in [k for k in self._image_at if k < seq]:
                del self._image_at[s]
            self._acked = max(self._acked, seq)
            self._acks.notify_all()
        return done

    def done_in(self, epoch: int) -> bool:
        """Is the END of ``epoch`` sent (and no resend asked for since)?"""
        return self.finished.is_set() and self.finished_epoch == epoch

    def pending(self) -> list[_Result]:
        """What was sent and not acknowledged yet, in order."""
        with self._lock:
            return [self._sent[s] for s in sorted(self._sent)]

    def close(self) -> None:
        """The clone is over (or failed): stop every thread."""
        self._closed.set()
        self.crew.shutdown()

    # --- threads ---

    def _read_loop(self) -> None:
        upcoming = self.plan_jobs
        replay: list[Job] = []
        gen = 0
        while True:
            with self._lock:
                request, self._replay = self._replay, None
                if request is not None:
                    seq, gen = request
                    replay = [self._history[s] for s in sorted(self._history) if s >= seq]
                    self._gen = gen
            if replay:
                job: Job | None = replay.pop(0)
            else:
                if not self._room_ahead():
                    continue  # a rewind was asked for meanwhile
                job = next(upcoming, None)
                if job is None:  # the END is on its way: wait for a rewind, or the end
                    if self._closed.wait(0.05):
                        return
                    if self.crew.stop.is_set():
                        raise Stopped
                    continue
                with self._lock:
                    self._history[job.seq] = job
                    self._history_bytes += job.chunk.length if job.chunk is not None else 0
            assert job is not None
            self._read_one(gen, job)

    def _room_ahead(self) -> bool:
        """Wait until less than :data:`UNACKED_BYTES` (and frames) are unacknowledged; False if a rewind
        was asked for meanwhile (it is served first)."""
        with self._acks:
            while self._history_bytes >= UNACKED_BYTES or len(self._history) >= UNACKED_FRAMES:
                if self._replay is not None:
                    return False
                if self.crew.stop.is_set():
                    raise Stopped
                self._acks.wait(0.2)
        return True

    def _read_one(self, gen: int, job: Job) -> None:
        while not self.inflight.acquire(timeout=0.2):
            if self.crew.stop.is_set():
                raise Stopped
        if job.chunk is None:
            self.jobs.put((gen, job, None, None))
            return
        c = job.chunk
        buf = self.pool.get()
        view = memoryview(buf)[: c.length]
        start = self.read_meter.begin()
        try:
            note = self.read(job, view)
        finally:
            self.read_meter.end(start)
        c.zero_holes(view)
        self.jobs.put((gen, job, buf, note))

    def _work(self) -> None:
        compressors: dict[int, zstandard.ZstdCompressor] = {}
        aeads: dict[int, AESGCM] = {}
        while (item := self.jobs.get()) is not None:
            gen, job, buf, note = item
            if gen < self._gen:  # an epoch the receiver will drop anyway
                self._release(buf)
                continue
            keys = self.keys.for_epoch(gen)
            if job.chunk is None:
                maker = end_header if job.kind is JobKind.END else pass_header
                kind = Kind.END if job.kind is JobKind.END else Kind.PASS
                result = _Result(job, None, encode_header(maker(job.seq), keys.header), None, kind, b"")
                self.results.put((gen, job.seq), result)
                continue
            aead = None
            if self.encrypted:
                aead = aeads.get(gen)
                if aead is None:
                    aead = aeads[gen] = AESGCM(keys.payload)
            start = self.work_meter.begin()
            try:
                result = self._frame(job, buf, note, keys, aead, compressors)
            finally:
                self.work_meter.end(start)
            self.results.put((gen, job.seq), result)

    def _frame(
        self,
        job: Job,
        buf: object,
        note: Any,
        keys: DataKeys,
        aead: AESGCM | None,
        compressors: dict[int, zstandard.ZstdCompressor],
    ) -> _Result:
        c = job.chunk
        assert c is not None
        view = memoryview(buf)[: c.length]  # type: ignore[arg-type]
        digest = blake3.blake3(view).digest()
        held = None
        if job.kind is JobKind.CHUNK and self.offered is not None:
            held = self.offered.digest_at(c.offset, c.length)
        if held == digest:
            return self._same(job, buf, digest, keys, note)
        if digest == zero_digest(c.length):
            self.pool.put(buf)  # type: ignore[arg-type]
            header = encode_header(
                ChunkHeader(job.seq, c.offset, c.length, 0, Kind.ZERO, Codec.RAW, digest), keys.header
            )
            return _Result(job, None, header, None, Kind.ZERO, digest, note)
        if held is not None and self._take_blocks(c.length):
            return self._blocks(job, buf, digest, keys, aead)
        payload: memoryview | bytes = view
        codec = Codec.RAW
        level = self.levels.level
        if level != RAW:
            cctx = compressors.get(level)
            if cctx is None:
                cctx = compressors[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
            packed = cctx.compress(view)
            if len(packed) <= c.length * (1 - MIN_SAVING):
                payload, codec = packed, Codec.ZSTD
        tag = TAG_SIZE if aead is not None else 0
        header = encode_header(
            ChunkHeader(job.seq, c.offset, c.length, len(payload) + tag, Kind.DATA, codec, digest),
            keys.header,
            encrypted=aead is not None,
        )
        sealed = None
        if aead is not None:
            assert self.sealed_pool is not None
            sealed = self.sealed_pool.get()
            payload = seal_payload(aead, header, payload, memoryview(sealed))
        return _Result(job, buf, header, payload, Kind.DATA, digest, note, sealed)

    def _same(self, job: Job, buf: object, digest: bytes, keys: DataKeys, note: Any) -> _Result:
        """A chunk the target holds already: a header only. Its bytes stay until it is sent when the whole
        image is hashed (exact mode)."""
        c = job.chunk
        assert c is not None
        if self.image_hasher is None or digest == zero_digest(c.length):
            self.pool.put(buf)  # type: ignore[arg-type]
            buf = None
        header = encode_header(ChunkHeader(job.seq, c.offset, c.length, 0, Kind.SAME, Codec.RAW, digest), keys.header)
        return _Result(job, buf, header, None, Kind.SAME, digest, note)

    def _take_blocks(self, length: int) -> bool:
        """May this chunk of ``length`` bytes go as a BLOCKS frame? Where the receiver takes them, within the
        clone's budget (frames and bytes: the rounds of repair must carry them, should all their blocks differ)."""
        if not self.blocks:
            return False
        with self._lock:
            if not self._blocks_left or self._blocks_bytes_left < length:
                return False
            self._blocks_left -= 1
            self._blocks_bytes_left -= length
        return True

    def _blocks(self, job: Job, buf: object, digest: bytes, keys: DataKeys, aead: AESGCM | None) -> _Result:
        """A chunk the target holds in another version: the digests of its blocks; the receiver asks for those
        that differ in a repair round. Its bytes stay until it is sent when the whole image is hashed (exact
        mode)."""
        c = job.chunk
        assert c is not None
        digests = blocks.digests_of(memoryview(buf)[: c.length])  # type: ignore[arg-type]
        if self.image_hasher is None:
            self.pool.put(buf)  # type: ignore[arg-type]
            buf = None
        tag = TAG_SIZE if aead is not None else 0
        size = blocks.payload_size(c.length) + tag
        header = encode_header(
            ChunkHeader(job.seq, c.offset, c.length, size, Kind.BLOCKS, Codec.RAW, digest),
            keys.header,
            encrypted=aead is not None,
        )
        payload: bytes | memoryview = blocks.encode(keys.header, header, digests)
        if aead is not None:
            payload = seal_payload(aead, header, payload, memoryview(bytearray(size)))
        return _Result(job, buf, header, payload, Kind.BLOCKS, digest)

    def _release(self, item: object) -> None:
        """Give back what an unsent item holds (its buffers, its place in flight)."""
        if isinstance(item, _Result):
            item.payload = None
            if item.sealed is not None and self.sealed_pool is not None:
                self.sealed_pool.put(item.sealed)  # type: ignore[arg-type]
            item = item.buf
        if item is not None:
            self.pool.put(item)  # type: ignore[arg-type]
        self.inflight.release()

    def _send(self) -> None:
        gen, seq = 0, self._first_seq()
        while True:
            with self._lock:
                request, self._request = self._request, None
            if request is not None:
                at, new = request
                self.channel.send(encode_header(rewind_header(at, new), self.keys.for_epoch(gen).header))
                gen, seq = new, at
                self._went_back(at)
            r = self._take(gen, seq)
            if r is None:
                continue  # a rewind was asked for meanwhile
            with self._lock:
                self._sent_upto = seq + 1
            self._send_one(r)
            seq += 1
            if r.kind is Kind.END:
                self.finished_epoch = gen
                self.finished.set()
                while not self._closed.wait(0.05):
                    if self.crew.stop.is_set():
                        raise Stopped
                    with self._lock:
                        if self._request is not None:
                            break
                else:
                    return

    def _first_seq(self) -> int:
        return len(self.framelist)

    def _take(self, gen: int, seq: int) -> _Result | None:
        """The result for (gen, seq), or None as soon as a rewind is asked for."""
        return self.results.take_unless(
            (gen, seq), stale=lambda key: key[0] < gen, drop=self._release, unless=lambda: self._request is not None
        )

    def _send_one(self, r: _Result) -> None:
        job = r.job
        if r.payload is None:
            self.channel.send(r.header)
        else:
            self.channel.send_parts((r.header, r.payload))
        r.payload = None  # a resend reads the source again: nothing of the payload is kept
        if r.sealed is not None:
            assert self.sealed_pool is not None
            self.sealed_pool.put(r.sealed)  # type: ignore[arg-type]
        c = job.chunk
        if c is not None:
            self._record(r, c)
        if r.buf is not None:
            self.pool.put(r.buf)  # type: ignore[arg-type]
            r.buf = None
        self.inflight.release()
        with self._lock:
            self._sent[job.seq] = r

    def _record(self, r: _Result, c: Chunk) -> None:
        if r.job.kind is JobKind.PATCH:
            pass  # a part of a chunk recorded when its BLOCKS frame was sent
        elif r.job.kind is JobKind.REPLACE:
            index = self.framelist.find(c.offset, c.length)
            if index is None:
                raise RemoteProtocolError(f"a replacement for the chunk at byte {c.offset}, which was never sent")
            self.framelist.replace(index, r.digest, r.kind)
            self.replaced += 1
        else:
            kind = r.kind
            if kind is Kind.SAME:  # recorded as the frame that put its bytes there
                kind = Kind.ZERO if r.digest == zero_digest(c.length) else Kind.DATA
                self.same_bytes += c.length
                with self._lock:
                    self._same_at[c.offset] = c
            elif kind is Kind.BLOCKS:  # unchanged but for the blocks a repair round asks for
                kind = Kind.DATA
                self.same_bytes += c.length
                with self._lock:
                    self._blocks_at[c.offset] = c
                    self._blocks_starts.append(c.offset)
            self.framelist.append(c.offset, c.length, r.digest, kind)
            if self.image_hasher is not None:
                with self._lock:
                    self._image_at[r.job.seq] = self.image_hasher.copy()
                if kind is Kind.ZERO:
                    self._hash_zeros(c.length)
                else:
                    self.image_hasher.update(memoryview(r.buf)[: c.length])  # type: ignore[arg-type]
        if r.kind not in (Kind.SAME, Kind.BLOCKS):
            self.sent_bytes += c.length
        if r.kind is Kind.ZERO:
            self.zero_bytes += c.length

    def _went_back(self, seq: int) -> None:
        """The stream starts again at ``seq``: forget what was recorded from it on."""
        with self._lock:
            self._sent_upto = seq
            for s in [k for k in self._sent if k >= seq]:
                gone = self._sent.pop(s)
                if gone.kind in (Kind.SAME, Kind.BLOCKS) and gone.job.kind is JobKind.CHUNK and gone.job.chunk:
                    self.same_bytes -= gone.job.chunk.length  # it is recorded again when it is sent again
                    self._same_at.pop(gone.job.chunk.offset, None)
                    self._blocks_at.pop(gone.job.chunk.offset, None)
            if seq < len(self.framelist):  # first-pass frames go in increasing offsets: those dropped, the tail
                del self._blocks_starts[bisect.bisect_left(self._blocks_starts, self.framelist.record(seq)[0]) :]
            image = self._image_at.get(seq)
        if seq < len(self.framelist):
            self.framelist.truncate(seq)
            if self.image_hasher is not None:
                assert image is not None
                self.image_hasher = image

    def _hash_zeros(self, length: int) -> None:
        assert self.image_hasher is not None
        while length:
            n = min(length, len(self._zeros))
            self.image_hasher.update(self._zeros[:n])
            length -= n

    # --- results ---

    @property
    def image_digest(self) -> str | None:
        return None if self.image_hasher is None else self.image_hasher.hexdigest()
