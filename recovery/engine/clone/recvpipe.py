"""The receiver's pipeline: receive -> decompress and verify -> write.

The receiving thread reads each 80-byte header, checks its MAC and checks
it against the plan (:func:`decode_header`, :class:`FrameSequence`) and
reads the payload into a pooled buffer; workers open a sealed payload into
a second buffer (AES-GCM never works in place), decompress (refusing a frame whose declared size is not the
header's) and check the BLAKE3 digest: a chunk that fails is never written.
One writing thread writes in frame order, holds back the first and last MiB
until everything else is on disk, flushes periodically and reports what is
durable. A delta clone's SAME frames (bytes the target holds already, as this
side offered them) are recorded and not written; its BLOCKS frames (a chunk the
target holds in another version) are compared block by block with the target,
and the blocks that differ are asked for at the END, in rounds of repair.

With capability "resend" a damaged chunk does not end the clone at once:
when the writer reaches it, it asks the sender for it again (``on_resend``)
at most :data:`RESENDS_PER_FRAME` times, opening a new epoch. Frames of the
old epoch still on the way are read and dropped until the sender's REWIND
frame says the stream starts again there, under the new epoch's keys. A
clone in rescue mode may end with further passes whose frames replace
first-pass frames (the areas more reads recovered).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.diskimage.format import Codec as StoredCodec
from recovery.engine.clone.earlycheck import EarlyCheck
from recovery.engine.clone.framelist import UNKNOWN, FrameList, Recorded
from recovery.engine.clone.imagetarget import ImageTarget
from recovery.engine.clone.pipeline import BufferPool, Crew, Meter, Pipe, Reorder, Stopped, pool_count
from recovery.engine.clone.target import EDGE, Target
from recovery.errors import IntegrityError, LinkError, RemoteProtocolError
from recovery.link.base import Channel
from recovery.protocol import blocks
from recovery.protocol.frames import (
    HEADER_SIZE,
    ChunkHeader,
    Codec,
    FrameError,
    FrameLimits,
    FrameSequence,
    Kind,
    SequenceState,
    decode_header,
    open_payload,
    zero_digest,
)
from recovery.protocol.limits import (
    DELTA_BLOCK,
    MAX_BLOCKS_BYTES,
    MAX_BLOCKS_FRAMES,
    MAX_CHUNK_SIZE,
    MAX_PASSES,
    MAX_REPAIR,
    MAX_REPAIR_BYTES,
    RESENDS_PER_CLONE,
    RESENDS_PER_FRAME,
)
from recovery.protocol.pake import DataKeys
from recovery.units import human_size

INFLIGHT = 4096  # frames received but not yet written, at most
ACK_BYTES = 256 << 20
ACK_SECONDS = 2.0


@dataclass
class _Item:
    header: ChunkHeader
    data: memoryview | None  # the chunk's bytes, in a pooled (page-aligned) buffer
    buf: object | None
    pool: BufferPool | None
    stored: tuple[StoredCodec, bytes] | None = None  # an image target's: how it keeps the chunk
    blocks: list[bytes] | None = None  # a BLOCKS frame's: the source's digest of each block


@dataclass
class _Bad:
    """A frame that failed its check, and where the sequence stood before it."""

    header: ChunkHeader
    reason: IntegrityError
    before: SequenceState


@dataclass
class _Rewind:
    seq: int
    epoch: int
    before: SequenceState


@dataclass
class DurablePoint:
    """What the last flush made durable: frames before ``seq`` (all passes counted)."""

    seq: int
    covered: int  # bytes the first pass's frames cover so far
    first_new: int  # index in the frame list of the first record added since the last point
    replaced: list[int] = field(default_factory=list)  # records replaced since the last point
    held: list[tuple[int, bytes | None]] = field(default_factory=list)  # edge frames held since then


_END = object()
_PASS = object()


class ReceivePipeline(Recorded):
    def __init__(
        self,
        channel: Channel,
        target: Target,
        *,
        limits: FrameLimits,
        keys: DataKeys,
        on_durable: Callable[[DurablePoint], None],
        on_resend: Callable[[int, int, str], None] | None = None,
        workers: int = 2,
        frames: FrameList | None = None,
        held: list[tuple[ChunkHeader, bytes | None]] | None = None,
        max_replaced: int | None = None,
        early: EarlyCheck | None = None,
        on_repair: Callable[[int, int, list[tuple[int, int]], list[tuple[int, int]]], None] | None = None,
        passes_expected: bool | None = None,
        early_same: bool = True,
    ) -> None:
        """``frames`` and ``held``: what a resumed clone's target already holds (the stream starts after it).
        ``max_replaced``: the most first-pass frames later passes may replace (None: as many as come; PASS
        frames come only where ``passes_expected`` (default: ``limits.passes``), or after a repair).
        ``early``: reads back the ranges of SAME frames (and compares BLOCKS frames' blocks) while the
        stream goes on; with ``on_repair`` (capability "delta-repair"), those found changed (and the blocks
        that differ) are asked for at the END, in rounds: ``on_repair(seq, epoch, ranges, changed)``,
        ``changed`` the SAME frames' ranges among them."""
        self.early = early
        self.early_same = early_same  # SAME frames too (used mode; exact mode hashes the whole target at the end)
        self.on_repair = on_repair
        self._queue: list[tuple[int, int, bytes | None]] | None = None  # to repair: offset, length, digest
        self._repairing: dict[tuple[int, int], bytes | None] | None = None  # this round's ranges: their digest
        self._changed: dict[int, tuple[bytes, int]] = {}  # frames found changed: their record's digest, kind
        self._blocks: dict[int, tuple[bytes, int]] = {}  # BLOCKS frames not whole: digest, how many blocks
        self._blocks_taken = (0, 0)  # BLOCKS frames taken, and their bytes (at most the sender's budget)
        self._patch_of: dict[tuple[int, int], int] = {}  # a block asked for: its BLOCKS frame
        self._patching: dict[int, int] = {}  # a BLOCKS frame: how many of its blocks are still to come
        # A BLOCKS frame whose blocks the early check compared: the blocks written into it (with their
        # digests), all the read-back needs to read of it
        self._written_blocks: dict[int, list[tuple[int, int, bytes]]] = {}
        self._before_end: SequenceState | None = None  # where the sequence stood before the END frame
        self.channel = channel
        self.target = target
        self.image = target if isinstance(target, ImageTarget) else None  # chunks kept in their stored form
        self.keys = keys
        self.limits = limits
        self.on_durable = on_durable
        self.on_resend = on_resend  # None: a damaged frame ends the clone at once
        self.workers = workers
        self.crew = Crew("receive")
        self.crew.on_fail.append(channel.abort)
        # Payloads as they arrive, and decompressed chunks. The receiving
        # thread takes both for a frame, in frame order, so a worker never
        # waits for a buffer that later frames hold.
        self.payloads = BufferPool(self.crew, pool_count(workers, limits.max_payload), limits.max_payload)
        self.outputs = BufferPool(self.crew, pool_count(workers, limits.max_payload), limits.chunk_size)
        self.jobs: Pipe[tuple[int, ChunkHeader, bytes, object, object | None, SequenceState] | None] = Pipe(
            self.crew, workers * 2
        )
        self.results: Reorder[tuple[int, int], object] = Reorder(self.crew)
        self.inflight = threading.Semaphore(INFLIGHT)  # in results, not yet written (ZERO frames too)
        self.framelist = frames or FrameList()
        self.start_seq = len(self.framelist)
        self.sequence = FrameSequence(limits, self.framelist.state_after())
        self.held: list[tuple[ChunkHeader, bytes | None]] = list(held or [])
        self.net_meter = Meter()
        self.work_meter = Meter()
        self.write_meter = Meter()
        self.zero_bytes = 0
        self.same_bytes = 0  # a delta's: bytes the target held already (SAME frames), not written
        self.resends = 0
        self.replaced = 0  # first-pass frames replaced by a later pass
        self.max_replaced = max_replaced
        self.passes_expected = passes_expected if passes_expected is not None else limits.passes
        self.finished = threading.Event()
        self.head_end = EDGE
        self.tail_start = limits.target_size - EDGE
        self._lock = threading.Lock()
        self._pending: _Rewind | None = None  # asked for, its REWIND frame not seen yet
        self._point: DurablePoint | None = None  # written since the last flush (the writer's)
        self._epoch = 0  # the receiving thread's

    def start(self) -> None:
        self.crew.spawn(self._receive, name="net")
        for i in range(self.workers):
            self.crew.spawn(self._work, name=f"work{i}")
        self.crew.spawn(self._write, name="write")

    # --- threads ---

    def _limits_for(self, epoch: int) -> FrameLimits:
        return replace(self.limits, header_key=self.keys.for_epoch(epoch).header)

    def _receive(self) -> None:
        raw = bytearray(HEADER_SIZE)
        view = memoryview(raw)
        scratch: bytearray | None = None
        limits = self.limits
        while True:
            start = self.net_meter.begin()
            try:
                self.channel.recv_exact(view, "a frame header")
            except LinkError as e:
                raise LinkError(f"link lost before the end of the stream: {e}") from None
            self.net_meter.end(start)
            h = decode_header(view, limits)
            with self._lock:
                pending = self._pending
            if h.kind is Kind.REWIND:
                if pending is None or (h.seq, h.offset) != (pending.seq, pending.epoch):
                    raise FrameError(f"frame {h.seq}: a REWIND frame that nobody asked for")
                self.sequence.restore(pending.before)
                self._epoch = pending.epoch
                limits = self._limits_for(self._epoch)
                with self._lock:
                    self._pending = None
                continue
            before = self.sequence.state()
            self.sequence.accept(h)
            if pending is not None:  # the old epoch, on its way before the sender heard: read and drop
                if h.payload_len:
                    scratch = scratch or bytearray(self.limits.max_payload)
                    self.channel.recv_exact(memoryview(scratch)[: h.payload_len], f"frame {h.seq}")
                continue
            epoch = self._epoch
            while not self.inflight.acquire(timeout=0.2):  # what waits to be written is bounded
                if self.crew.stop.is_set():
                    raise Stopped
            if h.kind is Kind.END:
                self._before_end = before
                self.results.put((epoch, h.seq), _END)
                if not self._await_verdict():
                    return
                self.sequence.restore(before)  # the writer went back: the stream goes on
                continue
            if h.kind is Kind.PASS:
                self.results.put((epoch, h.seq), _PASS)
                continue
            if h.kind in (Kind.ZERO, Kind.SAME):
                self.results.put((epoch, h.seq), _Item(h, None, None, None))
                continue
            if h.kind is Kind.BLOCKS:
                self.results.put((epoch, h.seq), self._blocks_item(h, bytes(view), epoch, before))
                continue
            buf = self.payloads.get()
            out = self.outputs.get() if h.codec is Codec.ZSTD or self.limits.encrypted else None
            start = self.net_meter.begin()
            self.channel.recv_exact(memoryview(buf)[: h.payload_len], f"frame {h.seq}")
            self.net_meter.end(start)
            self.jobs.put((epoch, h, bytes(view), buf, out, before))

    def _blocks_item(self, h: ChunkHeader, header: bytes, epoch: int, before: SequenceState) -> object:
        """A BLOCKS frame's payload, read, opened and checked here (a few KiB): its item, or (capability
        "resend") a frame to ask for again."""
        payload = memoryview(bytearray(h.payload_len))
        self.channel.recv_exact(payload, f"frame {h.seq}")
        keys = self.keys.for_epoch(epoch)
        try:
            if self.limits.encrypted:
                payload = open_payload(AESGCM(keys.payload), h, header, payload, memoryview(bytearray(h.payload_len)))
            digests = blocks.decode(keys.header, header, payload, h.raw_len)
        except IntegrityError as e:
            if self.on_resend is None:
                raise
            return _Bad(h, e, before)
        return _Item(h, None, None, None, blocks=digests)

    def _await_verdict(self) -> bool:
        """After an END: False once the writer finished, True if it asked for a frame again."""
        while not self.finished.wait(0.05):
            if self.crew.stop.is_set():
                raise Stopped
            with self._lock:
                if self._pending is not None:
                    return True
        for _ in range(self.workers):
            self.jobs.put(None)
        return False

    def _work(self) -> None:
        dctx = zstandard.ZstdDecompressor()
        aeads: dict[int, AESGCM] = {}
        # A sealed, compressed payload is opened here before it is decompressed into ``out``.
        scratch = memoryview(bytearray(self.limits.max_payload)) if self.limits.encrypted else None
        while (item := self.jobs.get()) is not None:
            epoch, h, header, buf, out, before = item
            start = self.work_meter.begin()
            try:
                data, buf, pool, packed = self._check(dctx, aeads, scratch, epoch, h, header, buf, out)
                stored = self.image.stored_form(h.offset, data, packed) if self.image is not None else None
            except IntegrityError as e:
                if self.on_resend is None:
                    raise
                self.results.put((epoch, h.seq), _Bad(h, e, before))
                continue
            finally:
                self.work_meter.end(start)
            self.results.put((epoch, h.seq), _Item(h, data, buf, pool, stored))

    def _check(
        self,
        dctx: zstandard.ZstdDecompressor,
        aeads: dict[int, AESGCM],
        scratch: memoryview | None,
        epoch: int,
        h: ChunkHeader,
        header: bytes,
        buf: object,
        out: object | None,
    ) -> tuple[memoryview, object, BufferPool, bytes | None]:
        """Open, decompress and check one payload: its bytes, their buffer, its pool, and (for an image
        target) the zstd bytes it came as.

        ``out`` (from the output pool) is there when the payload is compressed or sealed: a raw
        sealed payload is opened into it, a compressed one decompressed into it. Every buffer
        not holding the result is back in its pool on return, and before an error is raised.
        """
        holding: list[tuple[object, BufferPool]] = [(buf, self.payloads)]
        if out is not None:
            holding.append((out, self.outputs))
        try:
            payload = memoryview(buf)[: h.payload_len]  # type: ignore[arg-type]
            if self.limits.encrypted:
                aead = aeads.get(epoch)
                if aead is None:
                    aead = aeads[epoch] = AESGCM(self.keys.for_epoch(epoch).payload)
                assert out is not None and scratch is not None
                opened = scratch if h.codec is Codec.ZSTD else memoryview(out)  # type: ignore[arg-type]
                payload = open_payload(aead, h, header, payload, opened)
            packed = bytes(payload) if self.image is not None and h.codec is Codec.ZSTD else None
            if out is not None:
                if h.codec is Codec.ZSTD:
                    payload = self._decompress(dctx, h, payload, memoryview(out)[: h.raw_len])  # type: ignore[arg-type]
                self.payloads.put(buf)  # type: ignore[arg-type]
                holding.pop(0)
                data, buf, pool = payload, out, self.outputs
            else:
                data, pool = payload, self.payloads
            if not hmac.compare_digest(blake3.blake3(data).digest(), h.digest):
                raise IntegrityError(
                    f"chunk {h.seq} (bytes {h.offset}..{h.end}, at {human_size(h.offset)}) failed "
                    "its BLAKE3 check: it was damaged on the way and was not written",
                    hint="check the cable or link and run the clone again",
                )
        except IntegrityError:
            for b, p in holding:
                p.put(b)  # type: ignore[arg-type]
            raise
        return data, buf, pool, packed

    def _decompress(
        self, dctx: zstandard.ZstdDecompressor, h: ChunkHeader, payload: memoryview, out: memoryview
    ) -> memoryview:
        """Decompress into ``out``, which holds exactly the declared length."""
        where = f"chunk {h.seq} (bytes {h.offset}..{h.end})"
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError:
            declared = -2
        if declared != h.raw_len:
            raise IntegrityError(f"{where}: compressed data does not declare {h.raw_len} bytes; not written")
        got = 0
        try:
            reader = dctx.stream_reader(payload)
            while got < h.raw_len:
                n = reader.readinto(out[got:])
                if not n:
                    break
                got += n
            extra = reader.read(1)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{where} could not be decompressed ({e}); not written") from None
        if got != h.raw_len or extra:
            raise IntegrityError(f"{where} does not decompress to {h.raw_len} bytes; not written")
        return out

    def _is_edge(self, h: ChunkHeader) -> bool:
        if self.image is not None:
            return False  # an image is incomplete until its footer: nothing to hold back
        return h.offset < self.head_end or h.end > self.tail_start

    def _drop(self, item: object) -> None:
        if isinstance(item, _Item) and item.pool is not None:
            item.data = None
            item.pool.put(item.buf)  # type: ignore[arg-type]

    def _discard(self, item: object) -> None:
        """A result of an epoch given up (a resend was asked for): its buffers back, its place free."""
        self._drop(item)
        self.inflight.release()

    def _write(self) -> None:
        seq, epoch, passes = self.start_seq, 0, 0
        tries: dict[int, int] = {}
        since_flush = 0
        last_flush = time.monotonic()
        point = self._point = DurablePoint(seq, self.framelist.covered, len(self.framelist))
        while True:
            item = self.results.take_unless(
                (epoch, seq),
                stale=lambda key, e=epoch: key[0] < e,  # type: ignore[misc]
                drop=self._discard,
            )
            self.inflight.release()
            if item is _END:
                if self._ask_repair(seq, epoch, point, passes):
                    epoch += 1
                    continue
                break
            if isinstance(item, _Bad):
                epoch = self._ask_again(item, epoch, tries)
                continue
            seq += 1
            if item is _PASS:
                if not self.passes_expected and self._repairing is None:
                    raise RemoteProtocolError(f"frame {seq - 1}: a PASS frame nobody asked for")
                passes += 1
                continue
            assert isinstance(item, _Item)
            h = item.header
            start = self.write_meter.begin()
            self._put(item, passes, point)
            point.seq = seq
            since_flush += h.raw_len
            now = time.monotonic()
            if since_flush >= ACK_BYTES or now - last_flush >= ACK_SECONDS:
                self.target.flush()
                point.seq, point.covered = seq, self.framelist.covered
                self._mark_changed(point)
                self.on_durable(point)
                point = self._point = DurablePoint(seq, self.framelist.covered, len(self.framelist))
                since_flush, last_flush = 0, time.monotonic()
            self.write_meter.end(start)
        # Everything else is on disk: now the partition tables, then flush.
        for h, data in self.held:
            if data is None:
                self.target.zero(h.offset, h.raw_len)
            else:
                self.target.write(data, h.offset)
        self.target.flush()
        point.seq, point.covered = seq, self.framelist.covered
        self.on_durable(point)
        self._point = None
        self.finished.set()

    def settle(self, record: Callable[[DurablePoint], None]) -> None:
        """After the threads stopped on an error: flush what was written since the last durable point
        and hand that point to ``record`` (the journal), so a resume does not send it again."""
        point = self._point
        if point is not None and not self.crew.alive():
            self._mark_changed(point)  # found since the last point: it must say so too
        if (
            point is None
            or self.crew.alive()
            or (point.seq == point.first_new == len(self.framelist) and not point.replaced)
        ):
            return
        self.target.flush()
        point.covered = self.framelist.covered
        record(point)
        self._point = None

    def _put(self, item: _Item, passes: int, point: DurablePoint) -> None:
        """Write one frame (or hold it), and record it."""
        h = item.header
        data = None if item.data is None else item.data
        index = len(self.framelist)
        if passes and self._repairing is not None:
            if (h.offset, h.raw_len) not in self._repairing:
                raise RemoteProtocolError(f"frame {h.seq} replaces bytes {h.offset}..{h.end}: not asked for")
            wanted = self._repairing.pop((h.offset, h.raw_len))
            if wanted is not None and not hmac.compare_digest(wanted, h.digest):
                raise RemoteProtocolError(f"frame {h.seq} repairs bytes {h.offset}..{h.end} with another digest")
            patched = self._patch_of.pop((h.offset, h.raw_len), None)
            if patched is not None:
                self._patch(item, patched, point)
                return
        if passes:
            if self.max_replaced is not None and self.replaced >= self.max_replaced:
                raise RemoteProtocolError(
                    f"frame {h.seq} replaces more frames than the {self.max_replaced} the sender announced"
                )
            found = self.framelist.find(h.offset, h.raw_len)
            if found is None:
                raise RemoteProtocolError(
                    f"frame {h.seq} of pass {passes + 1} replaces no frame of the first pass "
                    f"(bytes {h.offset}..{h.end})"
                )
            index = found
        if h.kind is Kind.SAME:  # offered by this side for exactly this range and digest (decode_header)
            self.same_bytes += h.raw_len
            if self.early is not None and self.early_same and not passes:
                self.early.submit(index, h.offset, h.raw_len, h.digest)
            self.framelist.append(h.offset, h.raw_len, h.digest, _held_kind(h))
            if self.image is not None:  # an increment: its index names the parent's chunk
                self.image.same(h.offset, h.raw_len, h.digest)
            return
        if h.kind is Kind.BLOCKS:  # until its blocks that differ are written, the target holds no known digest
            assert item.blocks is not None
            self._take_blocks(h)
            self.same_bytes += h.raw_len
            self._blocks[index] = (h.digest, len(item.blocks))  # the early check keeps the digests that differ
            if self.early is not None:
                self.early.submit(index, h.offset, h.raw_len, item.blocks)
            self.framelist.append(h.offset, h.raw_len, UNKNOWN, Kind.DATA)
            return
        if self._is_edge(h):
            kept = None if data is None else bytes(data)
            self.held = [(x, d) for x, d in self.held if x.offset != h.offset]
            self.held.append((h, kept))
            point.held.append((index, kept))
            del data
            self._drop(item)
            self.zero_bytes += h.raw_len if h.kind is Kind.ZERO else 0
        else:
            del data
            self._store(item)
        if passes:
            if self.early is not None:
                self.early.forget(index)
            self._changed.pop(index, None)
            self.framelist.replace(index, h.digest, h.kind)
            point.replaced.append(index)
            self.replaced += 1
        else:
            self.framelist.append(h.offset, h.raw_len, h.digest, h.kind)

    def _take_blocks(self, h: ChunkHeader) -> None:
        """A BLOCKS frame, within the budget an honest sender keeps (:data:`MAX_BLOCKS_FRAMES`, ``_BYTES``):
        what this side holds for them is bounded."""
        frames, size = self._blocks_taken[0] + 1, self._blocks_taken[1] + h.raw_len
        if frames > MAX_BLOCKS_FRAMES or size > MAX_BLOCKS_BYTES:
            raise RemoteProtocolError(
                f"frame {h.seq}: more BLOCKS frames than {MAX_BLOCKS_FRAMES}, or of more than {MAX_BLOCKS_BYTES} bytes"
            )
        self._blocks_taken = (frames, size)

    def _store(self, item: _Item) -> None:
        """Put a frame's bytes on the target (a ZERO frame's made without writing them), and give its buffers
        back."""
        h = item.header
        if h.kind is Kind.ZERO:
            self.target.zero(h.offset, h.raw_len)
            self.zero_bytes += h.raw_len
        elif self.image is not None and item.stored is not None:
            self.image.put(h.offset, h.raw_len, h.digest, *item.stored)
        else:
            assert item.data is not None
            self.target.write(item.data, h.offset, aligned_buffer=True)
        self._drop(item)

    def _patch(self, item: _Item, index: int, point: DurablePoint) -> None:
        """Write a run of blocks of BLOCKS frame ``index`` that a repair round asked for; the last one makes the
        record the source's digest."""
        self._store(item)
        self._patching[index] -= 1
        if not self._patching[index]:
            del self._patching[index]
            digest, _ = self._blocks.pop(index)
            self.framelist.replace(index, digest, Kind.DATA)
            point.replaced.append(index)

    def _ask_repair(self, seq: int, epoch: int, point: DurablePoint, passes: int) -> bool:
        """At an END of a delta: the next round of repair, after frame ``seq`` (a new epoch): SAME frames the
        early check found differing from the source, and the blocks of BLOCKS frames that differ on the
        target. False when there is none left, or no more rounds can come (then the records go back to the
        source's digests, and the read-back at the end fails on what was not repaired)."""
        if self.on_repair is None:
            return False
        if self._repairing:
            raise RemoteProtocolError(f"a round of repair ended without {len(self._repairing)} of the ranges asked for")
        if self._queue is None:
            self._queue = self._to_repair(point, MAX_PASSES - passes)
        if not self._queue or passes >= MAX_PASSES or self._before_end is None:
            self._give_back(point)
            return False
        count = _batch(self._queue)
        batch, self._queue = self._queue[:count], self._queue[count:]
        self._repairing = {(o, n): d for o, n, d in batch}
        size = sum(n for _, n, _ in batch)
        self.same_bytes -= size  # not unchanged after all: they are written
        ranges = [(o, n) for o, n, _ in batch]
        changed = [r for r in ranges if r not in self._patch_of]
        self.max_replaced = self.replaced + len(changed)
        self.resends += 1 if changed else 0  # a changed chunk's blocks are its BLOCKS frame's due, not a resend
        with self._lock:
            self._pending = _Rewind(seq, epoch + 1, self._before_end)
        self.on_repair(seq, epoch + 1, ranges, changed)
        return True

    def _to_repair(self, point: DurablePoint, rounds: int) -> list[tuple[int, int, bytes | None]]:
        """Everything to repair, in increasing offsets, each with the digest it must come with (None: a run of
        blocks, checked by its chunk's read-back): the SAME frames found changed, and the runs of blocks of
        BLOCKS frames that differ (all of them where they could not be compared). A BLOCKS frame none of
        whose blocks differ gets its digest at once. More than ``rounds`` rounds can carry: each BLOCKS frame
        asks for one run, from its first block that differs to its last."""
        if self.early is not None:
            self.early.finish()
        self._mark_changed(point)  # those found since the last durable point
        wanted: list[tuple[int, int, bytes | None]] = [
            (*self.framelist.record(i)[:2], digest) for i, (digest, _) in self._changed.items()
        ]
        compared: dict[int, Mapping[int, bytes]] = {}  # frames the early check compared: their blocks that differ
        differing: dict[int, Mapping[int, bytes | None]] = {}
        count = size = 0  # the runs they make, and their bytes
        for index, (digest, blocks_in) in list(self._blocks.items()):
            offset, length = self.framelist.record(index)[:2]
            found = None if self.early is None else self.early.differing(index)
            differ: Mapping[int, bytes | None]
            if found is None:  # not compared: all of them (a lone block's digest is its chunk's)
                differ = {0: digest} if blocks_in == 1 else dict.fromkeys(range(blocks_in))
            else:
                differ = compared[index] = found
            if not differ:
                del self._blocks[index]
                self.framelist.replace(index, digest, Kind.DATA)
                point.replaced.append(index)
                self._written_blocks[index] = []
                continue
            differing[index] = differ
            count += sum(k - 1 not in differ for k in differ)
            size += sum(min(DELTA_BLOCK, length - k * DELTA_BLOCK) for k in differ)
        count += len(wanted)
        size += sum(n for _, n, _ in wanted)
        fine = rounds_needed(count, size) <= rounds
        for index, differ in differing.items():
            offset, length = self.framelist.record(index)[:2]
            ranges = blocks.block_ranges(offset, length)
            if fine:
                these = _runs(ranges, differ)
            else:  # one run, from the first block that differs to the last; blocks that matched are written too
                first, last = ranges[min(differ)], ranges[max(differ)]
                these = [(first[0], last[0] + last[1] - first[0], None)]
                compared.pop(index, None)  # so the chunk is read back whole
            if index in compared:
                self._written_blocks[index] = self._blocks_in(index, these, compared[index])
            self._patching[index] = len(these)
            for o, n, d in these:
                self._patch_of[(o, n)] = index
                wanted.append((o, n, d))
        return sorted(wanted, key=lambda r: r[0])

    def _blocks_in(
        self, index: int, runs: list[tuple[int, int, bytes | None]], differ: Mapping[int, bytes]
    ) -> list[tuple[int, int, bytes]]:
        """The blocks of BLOCKS frame ``index`` that ``runs`` cover (each one that differs), with their digests."""
        offset = self.framelist.record(index)[0]
        found = []
        for start, size, _ in runs:  # on the chunk's block grid, in order
            first = (start - offset) // DELTA_BLOCK
            for k, (o, n) in enumerate(blocks.block_ranges(start, size), first):
                found.append((o, n, differ[k]))
        return found

    def block_reads(self) -> tuple[dict[int, tuple[int, int, bool]], list[tuple[int, int, bytes]]]:
        """For the read-back: the chunks of BLOCKS frames whose blocks the early check compared with the
        source's (their unchanged blocks matched), as checked; and the blocks written into them, to read."""
        checked = {i: (*self.framelist.record(i)[:2], True) for i in self._written_blocks}
        return checked, sorted(b for written in self._written_blocks.values() for b in written)

    def _mark_changed(self, point: DurablePoint) -> None:
        """SAME frames the early check found changed on the target (a repair will send them again): until
        they are written, the journal says the target holds no known digest there, so a resume after a
        lost link compares them with the source and sends them again instead of believing the record."""
        if self.early is None or self.on_repair is None or self._queue is not None:
            return
        for index, _, _ in self.early.changed():
            if index not in self._changed:
                _, _, digest, kind = self.framelist.record(index)
                self._changed[index] = (digest, kind)
                self.framelist.replace(index, UNKNOWN, Kind.DATA)
                point.replaced.append(index)

    def _give_back(self, point: DurablePoint) -> None:
        """No (more) repair: what was not repaired gets its source's digest back in the records (the sender's
        list digest holds it; the read-back fails there, and a clone that fails verification is no record)."""
        for index, (digest, kind) in self._changed.items():
            self.framelist.replace(index, digest, kind)
            point.replaced.append(index)
        for index, (digest, _) in self._blocks.items():
            self.framelist.replace(index, digest, Kind.DATA)
            point.replaced.append(index)
            self._written_blocks.pop(index, None)  # not all written: read back whole (and found to differ)
        self._changed.clear()
        self._blocks.clear()

    def _ask_again(self, bad: _Bad, epoch: int, tries: dict[int, int]) -> int:
        """The frame the writer waits for is damaged: ask for it again (a new epoch), or give up."""
        h = bad.header
        tries[h.seq] = tries.get(h.seq, 0) + 1
        if tries[h.seq] > RESENDS_PER_FRAME or self.resends >= RESENDS_PER_CLONE:
            raise IntegrityError(
                f"{bad.reason.message}; it arrived damaged {tries[h.seq]} times, so the clone stops",
                hint="check the cable or link, or use another link",
            )
        assert self.on_resend is not None
        self.resends += 1
        epoch += 1
        with self._lock:
            self._pending = _Rewind(h.seq, epoch, bad.before)
        self.on_resend(h.seq, epoch, bad.reason.message)
        return epoch


def _batch(queue: list[tuple[int, int, bytes | None]]) -> int:
    """How many of the ranges to repair at the head of ``queue`` one round carries (at least one)."""
    count = size = 0
    for _, n, _ in queue[:MAX_REPAIR]:
        if count and size + n > MAX_REPAIR_BYTES:
            break
        count, size = count + 1, size + n
    return count


def rounds_needed(count: int, size: int) -> int:
    """The most rounds of repair ``count`` ranges of ``size`` bytes in all take (each round but the last is
    full by its count, or by its bytes but for one range: a chunk at most)."""
    return -(-count // MAX_REPAIR) + -(-size // (MAX_REPAIR_BYTES - MAX_CHUNK_SIZE))


def _runs(ranges: list[tuple[int, int]], differ: Mapping[int, bytes | None]) -> list[tuple[int, int, bytes | None]]:
    """The blocks ``differ`` names (their numbers: their digests) of a chunk whose blocks lie at ``ranges``,
    adjacent ones as one run: (offset, length, the block's digest, or None for a run of more than one)."""
    runs: list[tuple[int, int, bytes | None]] = []
    last = -2
    for k in sorted(differ):
        offset, length = ranges[k]
        if k == last + 1:
            start = runs[-1][0]
            runs[-1] = (start, offset + length - start, None)
        else:
            runs.append((offset, length, differ[k]))
        last = k
    return runs


def _held_kind(h: ChunkHeader) -> Kind:
    """How a SAME frame is recorded: as the frame that would have put its bytes there."""
    return Kind.ZERO if h.digest == zero_digest(h.raw_len) else Kind.DATA
