"""Chunk frames on the data channel (pure: bytes in, values out).

Theory of operation
-------------------
The data channel carries a sequence of frames, each a fixed 72-byte header
followed by ``payload_len`` bytes. Frames are numbered from 0 and cover
strictly increasing, non-overlapping ranges of the target. A DATA frame
carries the bytes (raw or zstd-compressed), a ZERO frame says "this range is
all zeros" and carries nothing, and one END frame closes the stream; its
``seq`` is the number of chunk frames before it.

Every header names the BLAKE3 digest of the raw (uncompressed) bytes, so the
digest does not depend on the codec, and ends with a short check over the
header itself so that a damaged offset or length is caught before it can
steer a write. Nothing in a header is trusted: :func:`decode_header` checks
each field against the limits agreed in the plan, and :class:`FrameSequence`
checks the order of frames.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import blake3

from recovery.errors import LocalProtocolError, RemoteProtocolError

FRAME_MAGIC = b"U4CK"
FRAME_VERSION = 1
DIGEST_SIZE = 32
CHECK_SIZE = 8

# The header, network byte order.
HEADER_BODY = struct.Struct(
    "!"
    "4s"  # magic, b"U4CK"
    "B"  # frame format version (1)
    "B"  # kind: Kind
    "B"  # codec: Codec
    "B"  # flags: reserved, 0
    "Q"  # seq: frame number, 0, 1, 2, ...
    "Q"  # offset on the target, in bytes
    "I"  # raw_len: bytes this frame puts on the target
    "I"  # payload_len: bytes that follow the header
    "32s"  # BLAKE3 of the raw bytes (zeros for END)
)
HEADER_SIZE = HEADER_BODY.size + CHECK_SIZE  # + first 8 bytes of BLAKE3(body)
assert HEADER_SIZE == 72

MAX_CHUNK_SIZE = 64 << 20  # hard cap whatever the plan says


class Kind(enum.IntEnum):
    DATA = 0
    ZERO = 1
    END = 2


class Codec(enum.IntEnum):
    RAW = 0
    ZSTD = 1


class FrameError(RemoteProtocolError):
    """A frame header (or the order of frames) is malformed."""


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """What the plan allows; every header is checked against it."""

    chunk_size: int
    target_size: int

    @property
    def max_payload(self) -> int:
        return zstd_bound(self.chunk_size)


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    seq: int
    offset: int
    raw_len: int
    payload_len: int
    kind: Kind
    codec: Codec
    digest: bytes

    @property
    def end(self) -> int:
        return self.offset + self.raw_len


def zstd_bound(size: int) -> int:
    """Worst-case zstd frame size for ``size`` input bytes (ZSTD_compressBound)."""
    margin = ((128 << 10) - size) >> 11 if size < (128 << 10) else 0
    return size + (size >> 8) + margin + 64  # +64: frame header and checksum room


def header_check(body: bytes | memoryview) -> bytes:
    return blake3.blake3(body).digest(length=CHECK_SIZE)


def encode_header(h: ChunkHeader) -> bytes:
    """The 72 header bytes for ``h`` (no validation beyond struct ranges)."""
    try:
        body = HEADER_BODY.pack(
            FRAME_MAGIC,
            FRAME_VERSION,
            h.kind,
            h.codec,
            0,
            h.seq,
            h.offset,
            h.raw_len,
            h.payload_len,
            h.digest,
        )
    except struct.error as e:
        raise LocalProtocolError(f"cannot encode frame header: {e}") from None
    return body + header_check(body)


def end_header(frames: int) -> ChunkHeader:
    return ChunkHeader(frames, 0, 0, 0, Kind.END, Codec.RAW, bytes(DIGEST_SIZE))


def decode_header(data: bytes | memoryview, limits: FrameLimits) -> ChunkHeader:
    """Parse and check one header; raise :class:`FrameError` on anything odd."""
    if len(data) != HEADER_SIZE:
        raise FrameError(f"frame header is {len(data)} bytes, expected {HEADER_SIZE}")
    body = data[: HEADER_BODY.size]
    magic, version, kind, codec, flags, seq, offset, raw_len, payload_len, digest = (
        HEADER_BODY.unpack(body)
    )
    if magic != FRAME_MAGIC:
        raise FrameError("data channel does not carry usb4-recovery frames (bad magic)")
    if version != FRAME_VERSION:
        raise FrameError(f"frame format version {version} is not {FRAME_VERSION}")
    if bytes(data[HEADER_BODY.size :]) != header_check(body):
        raise FrameError(f"frame {seq}: header check failed (damaged in transit)")
    if flags != 0:
        raise FrameError(f"frame {seq}: unknown flags {flags:#x}")
    try:
        kind = Kind(kind)
        codec = Codec(codec)
    except ValueError:
        raise FrameError(f"frame {seq}: unknown kind {kind} or codec {codec}") from None
    if kind is Kind.END:
        if raw_len or payload_len or offset or codec is not Codec.RAW:
            raise FrameError("END frame carries a range or payload")
        return ChunkHeader(seq, 0, 0, 0, kind, codec, digest)
    if not 0 < raw_len <= min(limits.chunk_size, MAX_CHUNK_SIZE):
        raise FrameError(f"frame {seq}: length {raw_len} outside 1..{limits.chunk_size}")
    if offset + raw_len > limits.target_size:
        raise FrameError(
            f"frame {seq}: range {offset}+{raw_len} ends past the planned size "
            f"{limits.target_size}"
        )
    if kind is Kind.ZERO:
        if payload_len or codec is not Codec.RAW:
            raise FrameError(f"frame {seq}: ZERO frame with a payload")
    elif codec is Codec.RAW:
        if payload_len != raw_len:
            raise FrameError(f"frame {seq}: raw payload {payload_len} != length {raw_len}")
    elif not 0 < payload_len <= limits.max_payload:
        raise FrameError(f"frame {seq}: compressed payload {payload_len} out of bounds")
    return ChunkHeader(seq, offset, raw_len, payload_len, kind, codec, digest)


class FrameSequence:
    """Checks that frames come in order and never overlap.

    Feed every decoded header to :meth:`accept`; after the END frame,
    :attr:`finished` is true and any further frame is an error.
    """

    def __init__(self) -> None:
        self.next_seq = 0
        self.next_offset = 0
        self.finished = False

    def accept(self, h: ChunkHeader) -> None:
        if self.finished:
            raise FrameError(f"frame {h.seq} after the END frame")
        if h.seq != self.next_seq:
            raise FrameError(f"frame {h.seq} arrived, expected frame {self.next_seq}")
        if h.kind is Kind.END:
            self.finished = True
            return
        if h.offset < self.next_offset:
            raise FrameError(
                f"frame {h.seq} at offset {h.offset} overlaps the previous frame "
                f"(ended at {self.next_offset})"
            )
        self.next_seq += 1
        self.next_offset = h.end


@dataclass(frozen=True, slots=True)
class Frame:
    header: ChunkHeader
    payload: bytes


class FrameDecoder:
    """Sans-I/O decoder: feed bytes, take whole checked frames.

    The engine reads headers and payloads straight into its buffers with
    :func:`decode_header` and :class:`FrameSequence`; this class applies the
    same rules to an arbitrary byte stream, for tests and fuzzing.
    """

    def __init__(self, limits: FrameLimits) -> None:
        self.limits = limits
        self.sequence = FrameSequence()
        self._buf = bytearray()
        self._header: ChunkHeader | None = None

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None when more bytes are needed."""
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            header = decode_header(bytes(self._buf[:HEADER_SIZE]), self.limits)
            self.sequence.accept(header)
            del self._buf[:HEADER_SIZE]
            self._header = header
        if len(self._buf) < self._header.payload_len:
            return None
        n = self._header.payload_len
        frame = Frame(self._header, bytes(self._buf[:n]))
        del self._buf[:n]
        self._header = None
        return frame

    @property
    def trailing(self) -> int:
        """Bytes received but not yet part of a returned frame."""
        return len(self._buf)
