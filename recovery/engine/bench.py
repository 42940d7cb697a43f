"""Measuring this machine's pipeline stages and predicting clone speed.

Each stage is timed on real data: the source disk's own first bytes when one
is given (read past the page cache), else a generated mix of text-like,
random and zero data. The prediction combines them the way the pipeline
does: the sender's workers hash and compress in parallel, the link carries
the compressed bytes, and the slowest of disk, CPU and link sets the pace.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3
import zstandard

from recovery.engine.api import default_workers
from recovery.engine.clone.readback import DirectReader

MIB = 1 << 20
ZERO_MIB = bytes(MIB)
LEVELS = (1, 3, 6)
LINKS = {"1 Gbit/s Ethernet": 117e6, "thunderbolt-net (~10 Gbit/s)": 1.1e9, "USB4STREAM (~20 Gbit/s)": 2.3e9}


@dataclass
class StageRates:
    """Bytes per second of each stage, per thread where it says so."""

    disk_read: float | None  # None: no source given
    blake3: float  # one thread
    zstd: dict[int, float] = field(default_factory=dict)  # level -> one thread, raw bytes/s
    ratio: dict[int, float] = field(default_factory=dict)  # level -> compressed / raw
    unzstd: float = 0.0  # decompression, one thread, raw bytes/s
    loopback: float = 0.0  # TCP over loopback on this machine
    workers: int = 2
    sample: str = ""
    # threads -> bytes/s of BLAKE3 + zstd level 1 over all of them (how the workers scale)
    scaling: dict[int, float] = field(default_factory=dict)


def _timed(fn: Callable[[], object], nbytes: int, min_seconds: float = 0.3) -> float:
    """Bytes per second of ``fn`` processing ``nbytes``, repeated for a stable figure."""
    runs = 0
    start = time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return nbytes * runs / elapsed


def sample_data(size: int = 32 * MIB) -> bytes:
    """Half text-like, a quarter random, a quarter zeros: a plausible disk."""
    rng = random.Random(6)
    words = [bytes(rng.choice(b"etaoinshrdlucmfw") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    text = bytearray()
    while len(text) < size // 2:
        text += b" ".join(rng.choice(words) for _ in range(400)) + b"\n"
    return bytes(text[: size // 2]) + rng.randbytes(size // 4) + bytes(size - size // 2 - size // 4)


def read_source(path: str, nbytes: int, pieces: int = 32) -> tuple[float, bytes]:
    """(bytes per second of a sequential read past the cache, a sample of the
    data: ``pieces`` MiB taken evenly across the whole source, all-zero MiBs
    left out since zero chunks are never compressed or sent)."""
    reader = DirectReader(path)
    buf = memoryview(bytearray(4 * MIB + 4096))
    done = 0
    try:
        size = os.lseek(reader.fd, 0, os.SEEK_END)
        nbytes = max(min(nbytes, size - size % (4 * MIB)), min(size, 4 * MIB))
        start = time.perf_counter()
        while done < nbytes:
            n = min(4 * MIB, nbytes - done)
            reader.read(buf, done, n)
            done += n
        rate = done / (time.perf_counter() - start)
        sample = bytearray()
        step = max(MIB, (size // pieces) // MIB * MIB)
        for off in range(0, size - MIB + 1, step):
            piece = reader.read(buf, off, MIB)
            if piece != ZERO_MIB:
                sample += piece
    finally:
        reader.close()
    return rate, bytes(sample) or bytes(MIB)


def _compress_all(cctx: zstandard.ZstdCompressor, chunks: list[bytes]) -> Callable[[], object]:
    return lambda: [cctx.compress(c) for c in chunks]


def _decompress_all(dctx: zstandard.ZstdDecompressor, packed: list[bytes]) -> Callable[[], object]:
    return lambda: [dctx.decompress(p) for p in packed]


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    if cores > 1:
        counts.append(cores)
    return counts


def scaling_rates(chunks: list[bytes], cores: int, seconds: float = 0.5) -> dict[int, float]:
    """Bytes per second of a sender worker's work (BLAKE3, then zstd level 1)
    done by 1, 2, 4, ... threads at once: flat per thread means the workers
    scale with the cores."""

    def work(i: int, stop: float, done: list[int]) -> None:
        cctx = zstandard.ZstdCompressor(level=1)
        k = i
        while time.perf_counter() < stop:
            chunk = chunks[k % len(chunks)]
            blake3.blake3(chunk).digest()
            cctx.compress(chunk)
            done[i] += len(chunk)
            k += 1

    out = {}
    for n in thread_counts(cores):
        done = [0] * n
        start = time.perf_counter()
        stop = start + seconds
        threads = [threading.Thread(target=work, args=(i, stop, done)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out[n] = sum(done) / (time.perf_counter() - start)
    return out


def loopback_rate(nbytes: int = 512 * MIB) -> float:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    chunk = bytes(4 * MIB)

    def sink() -> None:
        conn, _ = server.accept()
        buf = memoryview(bytearray(4 * MIB))
        while conn.recv_into(buf):
            pass
        conn.close()

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    client = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    for _ in range(nbytes // len(chunk)):
        client.sendall(chunk)
    client.close()
    t.join()
    server.close()
    return nbytes / (time.perf_counter() - start)


def measure(source: str | None = None, read_bytes: int = 512 * MIB, workers: int | None = None) -> StageRates:
    workers = workers or default_workers()
    disk = None
    if source:
        disk, data = read_source(source, read_bytes)
        sample = f"{len(data) >> 20} MiB taken across {source} (zero MiBs left out)"
    else:
        data = sample_data()
        sample = "generated: 50% text-like, 25% random, 25% zeros"
    rates = StageRates(
        disk_read=disk, blake3=_timed(lambda: blake3.blake3(data).digest(), len(data)), workers=workers, sample=sample
    )
    chunks = [data[i : i + 4 * MIB] for i in range(0, len(data), 4 * MIB)]  # the engine's chunk size
    for level in LEVELS:
        cctx = zstandard.ZstdCompressor(level=level)
        packed = [cctx.compress(c) for c in chunks]
        rates.ratio[level] = sum(map(len, packed)) / len(data)
        rates.zstd[level] = _timed(_compress_all(cctx, chunks), len(data))
        if level == 1:
            rates.unzstd = _timed(_decompress_all(zstandard.ZstdDecompressor(), packed), len(data))
    rates.loopback = loopback_rate()
    rates.scaling = scaling_rates(chunks, workers)
    return rates


def predict(rates: StageRates, link: float, level: int | None) -> float:
    """Clone speed in source bytes per second over a link of ``link`` bytes/s."""
    per_byte = 1 / rates.blake3 + (1 / rates.zstd[level] if level else 0.0)
    cpu = rates.workers / per_byte
    ratio = rates.ratio[level] if level else 1.0
    limits = [cpu, link / ratio]
    if rates.disk_read:
        limits.append(rates.disk_read)
    return min(limits)


def best_level(rates: StageRates, link: float) -> tuple[int | None, float]:
    options = [(None, predict(rates, link, None))] + [(lv, predict(rates, link, lv)) for lv in LEVELS]
    return max(options, key=lambda o: o[1])
