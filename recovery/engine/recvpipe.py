"""The receiver's pipeline: receive -> decompress and verify -> write.

The receiving thread reads each 80-byte header, checks its MAC and checks
it against the plan (:func:`decode_header`, :class:`FrameSequence`) and
reads the payload into a pooled buffer; workers open a sealed payload in
place, decompress (refusing a frame whose declared size is not the
header's) and check the BLAKE3 digest: a chunk that fails is never written.
One writing thread writes in frame order, holds back the first and last MiB
until everything else is on disk, flushes periodically and reports what is
durable.
"""

from __future__ import annotations

import hmac
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.engine.pipeline import BufferPool, Crew, Meter, Pipe, Reorder, Stopped, pool_count
from recovery.engine.sendpipe import LIST_RECORD
from recovery.engine.target import EDGE, Target
from recovery.errors import IntegrityError, LinkError
from recovery.link.base import Channel
from recovery.protocol.frames import (
    HEADER_SIZE,
    ChunkHeader,
    Codec,
    FrameLimits,
    FrameSequence,
    Kind,
    decode_header,
    open_payload,
)
from recovery.units import human_size

INFLIGHT = 4096  # frames received but not yet written, at most
ACK_BYTES = 256 << 20
ACK_SECONDS = 2.0
LEDGER = struct.Struct("<QQ32sB")  # offset, length, digest, kind: what was written


@dataclass
class _Item:
    header: ChunkHeader
    data: memoryview | None  # the chunk's bytes, in a pooled (page-aligned) buffer
    buf: object | None
    pool: BufferPool | None


_END = object()


class ReceivePipeline:
    def __init__(
        self,
        channel: Channel,
        target: Target,
        *,
        limits: FrameLimits,
        on_durable: Callable[[int, int], None],
        payload_key: bytes | None = None,
        workers: int = 2,
    ) -> None:
        self.channel = channel
        self.target = target
        self.limits = limits
        self.on_durable = on_durable
        self.payload_key = payload_key if limits.encrypted else None
        self.workers = workers
        self.crew = Crew("receive")
        self.crew.on_fail.append(channel.abort)
        # Payloads as they arrive, and decompressed chunks. The receiving
        # thread takes both for a frame, in frame order, so a worker never
        # waits for a buffer that later frames hold.
        self.payloads = BufferPool(self.crew, pool_count(workers, limits.max_payload), limits.max_payload)
        self.outputs = BufferPool(self.crew, pool_count(workers, limits.max_payload), limits.chunk_size)
        self.jobs: Pipe[tuple[ChunkHeader, bytes, object, object | None] | None] = Pipe(self.crew, workers * 2)
        self.results: Reorder[object] = Reorder(self.crew)
        self.sequence = FrameSequence(limits)
        self.inflight = threading.Semaphore(INFLIGHT)
        self.list_hasher = blake3.blake3()
        self.ledger = bytearray()
        self.held: list[tuple[ChunkHeader, bytes | None]] = []
        self.net_meter = Meter()
        self.work_meter = Meter()
        self.write_meter = Meter()
        self.done_bytes = 0
        self.zero_bytes = 0
        self.frames = 0
        self.finished = threading.Event()
        self.head_end = EDGE
        self.tail_start = limits.target_size - EDGE

    def start(self) -> None:
        self.crew.spawn(self._receive, name="net")
        for i in range(self.workers):
            self.crew.spawn(self._work, name=f"work{i}")
        self.crew.spawn(self._write, name="write")

    # --- threads ---

    def _receive(self) -> None:
        raw = bytearray(HEADER_SIZE)
        view = memoryview(raw)
        while True:
            start = self.net_meter.begin()
            try:
                self.channel.recv_exact(view, "a frame header")
            except LinkError as e:
                raise LinkError(f"link lost before the end of the stream: {e}") from None
            self.net_meter.end(start)
            h = decode_header(view, self.limits)
            self.sequence.accept(h)
            while not self.inflight.acquire(timeout=0.2):  # frames not yet written: bounded, ZERO ones too
                if self.crew.stop.is_set():
                    raise Stopped
            if h.kind is Kind.END:
                self.results.put(h.seq, _END)
                break
            if h.kind is Kind.ZERO:
                self.results.put(h.seq, _Item(h, None, None, None))
                continue
            buf = self.payloads.get()
            out = self.outputs.get() if h.codec is Codec.ZSTD else None
            start = self.net_meter.begin()
            self.channel.recv_exact(memoryview(buf)[: h.payload_len], f"frame {h.seq}")
            self.net_meter.end(start)
            self.jobs.put((h, bytes(view), buf, out))
        for _ in range(self.workers):
            self.jobs.put(None)

    def _work(self) -> None:
        dctx = zstandard.ZstdDecompressor()
        aead = AESGCM(self.payload_key) if self.payload_key is not None else None
        while (item := self.jobs.get()) is not None:
            h, header, buf, out = item
            start = self.work_meter.begin()
            payload = memoryview(buf)[: h.payload_len]  # type: ignore[arg-type]
            if aead is not None:
                payload = open_payload(aead, h, header, payload)
            if out is not None:
                data = self._decompress(dctx, h, payload, memoryview(out)[: h.raw_len])  # type: ignore[arg-type]
                del payload
                self.payloads.put(buf)  # type: ignore[arg-type]
                buf, pool = out, self.outputs
            else:
                data, pool = payload, self.payloads
            if not hmac.compare_digest(blake3.blake3(data).digest(), h.digest):
                raise IntegrityError(
                    f"chunk {h.seq} (bytes {h.offset}..{h.end}, at {human_size(h.offset)}) failed "
                    "its BLAKE3 check: it was damaged on the way and was not written",
                    hint="check the cable or link and run the clone again",
                )
            self.work_meter.end(start)
            self.results.put(h.seq, _Item(h, data, buf, pool))

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
        return h.offset < self.head_end or h.end > self.tail_start

    def _write(self) -> None:
        seq = 0
        since_flush = 0
        last_flush = time.monotonic()
        while True:
            item = self.results.take(seq)
            if item is _END:
                break
            assert isinstance(item, _Item)
            h = item.header
            start = self.write_meter.begin()
            if self._is_edge(h):
                self.held.append((h, None if item.data is None else bytes(item.data)))
            elif h.kind is Kind.ZERO:
                self.target.zero(h.offset, h.raw_len)
            else:
                assert item.data is not None
                self.target.write(item.data, h.offset, aligned_buffer=True)
            if item.pool is not None:
                item.pool.put(item.buf)  # type: ignore[arg-type]
            if h.kind is Kind.ZERO:
                self.zero_bytes += h.raw_len
            self.list_hasher.update(LIST_RECORD.pack(h.offset, h.raw_len, h.digest))
            self.ledger += LEDGER.pack(h.offset, h.raw_len, h.digest, h.kind)
            self.done_bytes += h.raw_len
            self.frames += 1
            seq += 1
            self.inflight.release()
            since_flush += h.raw_len
            now = time.monotonic()
            if since_flush >= ACK_BYTES or now - last_flush >= ACK_SECONDS:
                self.target.flush()
                self.on_durable(seq, self.done_bytes)
                since_flush, last_flush = 0, time.monotonic()
            self.write_meter.end(start)
        # Everything else is on disk: now the partition tables, then flush.
        for h, data in self.held:
            if data is None:
                self.target.zero(h.offset, h.raw_len)
            else:
                self.target.write(data, h.offset)
        self.held.clear()
        self.target.flush()
        self.on_durable(seq, self.done_bytes)
        self.finished.set()

    @property
    def list_digest(self) -> str:
        return self.list_hasher.hexdigest()

    def entries(self) -> list[tuple[int, int, bytes, int]]:
        return list(LEDGER.iter_unpack(self.ledger))
