"""The sender's pipeline: read -> hash and compress -> send, overlapped.

One reader thread fills buffers from a fixed pool; worker threads hash each
chunk with BLAKE3 (a chunk whose digest is the all-zeros digest becomes a
ZERO frame, so zero detection costs nothing extra) and compress it with zstd
at the level the controller picks (raw when it does not shrink); one sending
thread writes frames in order, feeds the running digests and returns the
buffer to the pool. The workers also make each frame's header (with its MAC
under the clone's header key) and, when the plan says so, seal the payload
with AES-256-GCM into a second pooled buffer. BLAKE3, zstd and AES-GCM release
the GIL, so the stages run in parallel.
"""

from __future__ import annotations

import functools
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.engine.chunks import Chunk
from recovery.engine.level import MIN_SAVING, RAW, LevelController
from recovery.engine.pipeline import BufferPool, Crew, Meter, Pipe, Reorder, Stopped, pool_count
from recovery.engine.source import Source
from recovery.link.base import Channel
from recovery.protocol.frames import (
    TAG_SIZE,
    ChunkHeader,
    Codec,
    Kind,
    encode_header,
    end_header,
    seal_payload,
    zstd_bound,
)
from recovery.protocol.pake import DataKeys

LIST_RECORD = struct.Struct("<QQ32s")  # offset, length, digest: one per frame


@functools.lru_cache(maxsize=64)
def zero_digest(length: int) -> bytes:
    return blake3.blake3(bytes(length)).digest()


@dataclass
class _Result:
    chunk: Chunk
    buf: object | None  # pool buffer to return, None for ZERO frames
    header: bytes
    payload: memoryview | bytes | None
    kind: Kind
    digest: bytes
    sealed: object | None = None  # the sealed payload's pool buffer, to return


class SendPipeline:
    def __init__(
        self,
        source: Source,
        chunks: Iterable[Chunk],
        count: int,
        channel: Channel,
        *,
        chunk_size: int,
        levels: LevelController,
        image_digest: bool,
        keys: DataKeys,
        encrypted: bool,
        workers: int = 2,
    ) -> None:
        self.source = source
        self.chunks = chunks
        self.count = count
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
        self.jobs: Pipe[tuple[Chunk, object] | None] = Pipe(self.crew, workers * 2)
        self.results: Reorder[_Result] = Reorder(self.crew)
        self.inflight = threading.BoundedSemaphore(workers * 8 + 16)
        self.list_hasher = blake3.blake3()
        # exact mode: the whole image, hashed in order on the sending thread, over the cores
        self.image_hasher = blake3.blake3(max_threads=blake3.blake3.AUTO) if image_digest else None
        self.read_meter = Meter()
        self.work_meter = Meter()
        self.done_bytes = 0
        self.zero_bytes = 0
        self.frames = 0
        self.finished = threading.Event()
        self._zeros = memoryview(bytes(chunk_size))

    # --- threads ---

    def start(self) -> None:
        self.crew.spawn(self._read, name="read")
        for i in range(self.workers):
            self.crew.spawn(self._work, name=f"work{i}")
        self.crew.spawn(self._send, name="net")

    def _read(self) -> None:
        for c in self.chunks:
            while not self.inflight.acquire(timeout=0.2):
                if self.crew.stop.is_set():
                    raise Stopped
            buf = self.pool.get()
            view = memoryview(buf)[: c.length]
            start = self.read_meter.begin()
            self.source.read_into(view, c.offset)
            for hole_start, hole_len in c.holes:
                view[hole_start : hole_start + hole_len] = self._zeros[:hole_len]
            self.read_meter.end(start)
            self.jobs.put((c, buf))
        for _ in range(self.workers):
            self.jobs.put(None)

    def _work(self) -> None:
        compressors: dict[int, zstandard.ZstdCompressor] = {}
        aead = AESGCM(self.keys.payload) if self.encrypted else None
        while (item := self.jobs.get()) is not None:
            c, buf = item
            start = self.work_meter.begin()
            view = memoryview(buf)[: c.length]  # type: ignore[arg-type]
            digest = blake3.blake3(view).digest()
            if digest == zero_digest(c.length):
                self.pool.put(buf)  # type: ignore[arg-type]
                header = encode_header(ChunkHeader(c.seq, c.offset, c.length, 0, Kind.ZERO, Codec.RAW, digest),
                                       self.keys.header)
                result = _Result(c, None, header, None, Kind.ZERO, digest)
            else:
                payload: memoryview | bytes = view
                codec = Codec.RAW
                level = self.levels.level
                if level != RAW:
                    cctx = compressors.get(level)
                    if cctx is None:
                        cctx = compressors[level] = zstandard.ZstdCompressor(
                            level=level, write_content_size=True
                        )
                    packed = cctx.compress(view)
                    if len(packed) <= c.length * (1 - MIN_SAVING):
                        payload, codec = packed, Codec.ZSTD
                tag = TAG_SIZE if aead is not None else 0
                header = encode_header(
                    ChunkHeader(c.seq, c.offset, c.length, len(payload) + tag, Kind.DATA, codec, digest),
                    self.keys.header, encrypted=aead is not None)
                sealed = None
                if aead is not None:
                    assert self.sealed_pool is not None
                    sealed = self.sealed_pool.get()
                    payload = seal_payload(aead, header, payload, memoryview(sealed))
                result = _Result(c, buf, header, payload, Kind.DATA, digest, sealed)
            self.work_meter.end(start)
            self.results.put(c.seq, result)

    def _send(self) -> None:
        for seq in range(self.count):
            r = self.results.take(seq)
            c = r.chunk
            if r.payload is None:
                self.channel.send(r.header)
            else:
                self.channel.send_parts((r.header, r.payload))
            if r.sealed is not None:
                assert self.sealed_pool is not None
                r.payload = None
                self.sealed_pool.put(r.sealed)  # type: ignore[arg-type]
            self.list_hasher.update(LIST_RECORD.pack(c.offset, c.length, r.digest))
            if self.image_hasher is not None:
                if r.kind is Kind.ZERO:
                    self._hash_zeros(c.length)
                else:
                    self.image_hasher.update(memoryview(r.buf)[: c.length])  # type: ignore[arg-type]
            if r.buf is not None:
                self.pool.put(r.buf)  # type: ignore[arg-type]
            else:
                self.zero_bytes += c.length
            self.inflight.release()
            self.done_bytes += c.length
            self.frames += 1
        self.channel.send(encode_header(end_header(self.count), self.keys.header))
        self.finished.set()

    def _hash_zeros(self, length: int) -> None:
        assert self.image_hasher is not None
        while length:
            n = min(length, len(self._zeros))
            self.image_hasher.update(self._zeros[:n])
            length -= n

    # --- results ---

    @property
    def list_digest(self) -> str:
        return self.list_hasher.hexdigest()

    @property
    def image_digest(self) -> str | None:
        return None if self.image_hasher is None else self.image_hasher.hexdigest()
