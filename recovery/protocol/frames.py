"""Chunk frames on the data channel (pure: bytes in, values out).

Theory of operation
-------------------
The data channel carries a sequence of frames, each a fixed 80-byte header
followed by ``payload_len`` bytes. Frames are numbered from 0 and cover
strictly increasing, non-overlapping ranges of the target on the plan's grid
(no frame crosses a multiple of the chunk size; two frames in one grid cell
are more than :data:`MERGE_GAP` apart), so their number and the receiver's
bookkeeping stay proportional to the disk, whatever a peer sends. A DATA
frame carries the bytes (raw or zstd-compressed), a ZERO frame says "this
range is all zeros" and carries nothing, and one END frame closes the stream;
its ``seq`` is the number of chunk frames before it.

Every header names the BLAKE3 digest of the raw (uncompressed) bytes, so the
digest does not depend on the codec, and ends with a MAC over the header
itself: BLAKE3 keyed with the clone's header key (:mod:`recovery.protocol.pake`).
Since the header carries the digest, the MAC vouches for the chunk's bytes
too: a man in the middle can neither change a chunk nor steer a write. When
the plan says so, the payload is sealed with AES-256-GCM under the clone's
payload key, the frame number as nonce and the header as associated data
(flag :data:`ENCRYPTED`; ``payload_len`` then includes the 16-byte tag).
Nothing in a header is trusted: :func:`decode_header` checks the MAC and
each field against the limits agreed in the plan, and :class:`FrameSequence`
checks the order, the grid and the plan's totals as each frame arrives.

A SAME frame (capability "delta") carries nothing either: the target holds
those bytes already, and the receiver takes it only for exactly a range and
digest it offered (:attr:`FrameLimits.offered`). A BLOCKS frame (capability
"delta-blocks") names a chunk the receiver offered in an older version: its
payload is the source's digest of each 16 KiB block of it (:mod:`recovery.protocol.blocks`),
and the receiver asks later for the blocks that differ. Two more frame kinds come
with capabilities. A REWIND frame (capability
"resend") answers the receiver's request for a damaged frame: its ``seq`` is
that frame's number, its offset field the new *epoch*, and from it on the
stream continues from that frame under the epoch's own keys
(:meth:`~recovery.protocol.pake.DataKeys.for_epoch`), so a frame sent twice
never reuses a (key, nonce) pair even when its bytes differ. A PASS frame
(rescue mode) starts a further pass after the first: offsets start again
from 0 and each frame of it replaces a frame of the first pass exactly (the
receiver checks that against what it wrote).
"""

from __future__ import annotations

import enum
import functools
import hmac
import struct
from dataclasses import dataclass, field
from typing import Protocol

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from recovery.protocol import blocks
from recovery.protocol.limits import MAX_CHUNK_SIZE, MAX_EPOCH, MAX_PASSES, MERGE_GAP

FRAME_MAGIC = b"U4CK"
FRAME_VERSION = 2
DIGEST_SIZE = 32
MAC_SIZE = 16
TAG_SIZE = 16  # AES-GCM's, at the end of a sealed payload
ENCRYPTED = 0x01  # flags: the payload is sealed

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
    "I"  # payload_len: bytes that follow the header (with the tag, when sealed)
    "32s"  # BLAKE3 of the raw bytes (zeros for END)
)
HEADER_SIZE = HEADER_BODY.size + MAC_SIZE  # + BLAKE3(body) keyed with the clone's header key
assert HEADER_SIZE == 80


class Kind(enum.IntEnum):
    DATA = 0
    ZERO = 1
    END = 2
    REWIND = 3  # capability "resend": the stream continues from frame ``seq`` in epoch ``offset``
    PASS = 4  # rescue mode: a further pass of replacement frames begins
    SAME = 5  # capability "delta": the target holds these bytes already (a digest the receiver offered)
    BLOCKS = 6  # capability "delta-blocks": the target holds an older version; the payload: block digests


SEALED = (Kind.DATA, Kind.BLOCKS)  # kinds whose payload is sealed in an encrypted clone


class Codec(enum.IntEnum):
    RAW = 0
    ZSTD = 1


class FrameError(RemoteProtocolError):
    """A frame header (or the order of frames) is malformed."""


def frames_per_cell(chunk_size: int) -> int:
    """At most this many frames share one grid cell (they are more than MERGE_GAP apart)."""
    return 1 + (chunk_size - 1) // (MERGE_GAP + 1)


def max_frames(size: int, chunk_size: int) -> int:
    """The most frames a plan for ``size`` bytes can need on this grid."""
    cells = -(-size // chunk_size)
    return cells * frames_per_cell(chunk_size)


class OfferedDigests(Protocol):
    """What a receiver offered a delta clone (capability "delta"): the digest it holds at exactly
    ``offset`` and ``length``, or None."""

    def digest_at(self, offset: int, length: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """What the plan allows, and the clone's header key; every header is checked against it."""

    chunk_size: int
    target_size: int
    header_key: bytes = bytes(32)
    frames: int | None = None  # announced chunk frames (None: not checked)
    bytes: int | None = None  # announced bytes covered by frames
    encrypted: bool = False
    rewinds: bool = False  # REWIND frames may come (capability "resend")
    passes: bool = False  # PASS frames may come (rescue mode)
    offered: OfferedDigests | None = field(default=None, compare=False)  # SAME frames may name these
    blocks: bool = False  # BLOCKS frames may come, for ranges offered (the receiver said so)

    @property
    def max_payload(self) -> int:
        return zstd_bound(self.chunk_size) + (TAG_SIZE if self.encrypted else 0)


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


@functools.lru_cache(maxsize=64)
def zero_digest(length: int) -> bytes:
    """The BLAKE3 of ``length`` zero bytes (a ZERO frame's digest)."""
    return blake3.blake3(bytes(length)).digest()


def header_mac(key: bytes, body: bytes | memoryview) -> bytes:
    return blake3.blake3(body, key=key).digest(length=MAC_SIZE)


def encode_header(h: ChunkHeader, key: bytes, *, encrypted: bool = False) -> bytes:
    """The 80 header bytes for ``h``, MAC'd with ``key`` (no validation beyond struct ranges)."""
    try:
        body = HEADER_BODY.pack(
            FRAME_MAGIC,
            FRAME_VERSION,
            h.kind,
            h.codec,
            ENCRYPTED if encrypted and h.kind in SEALED else 0,
            h.seq,
            h.offset,
            h.raw_len,
            h.payload_len,
            h.digest,
        )
    except struct.error as e:
        raise LocalProtocolError(f"cannot encode frame header: {e}") from None
    return body + header_mac(key, body)


def end_header(frames: int) -> ChunkHeader:
    return ChunkHeader(frames, 0, 0, 0, Kind.END, Codec.RAW, bytes(DIGEST_SIZE))


def rewind_header(seq: int, epoch: int) -> ChunkHeader:
    return ChunkHeader(seq, epoch, 0, 0, Kind.REWIND, Codec.RAW, bytes(DIGEST_SIZE))


def pass_header(seq: int) -> ChunkHeader:
    return ChunkHeader(seq, 0, 0, 0, Kind.PASS, Codec.RAW, bytes(DIGEST_SIZE))


def payload_nonce(seq: int) -> bytes:
    """The AES-GCM nonce of frame ``seq``: unique, as every clone has its own key."""
    return struct.pack("!IQ", 0, seq)


def seal_payload(aead: AESGCM, header: bytes | memoryview, payload: bytes | memoryview, out: memoryview) -> memoryview:
    """Encrypt ``payload`` into ``out`` (which has room for the tag); the sealed bytes."""
    seq = struct.unpack_from("!Q", header, 8)[0]
    n = aead.encrypt_into(payload_nonce(seq), payload, header[: HEADER_BODY.size], out[: len(payload) + TAG_SIZE])
    return out[:n]


def open_payload(
    aead: AESGCM, h: ChunkHeader, header: bytes | memoryview, sealed: memoryview, out: memoryview
) -> memoryview:
    """Decrypt ``sealed`` into ``out`` (a separate buffer: AEADs refuse to work in place); the plain
    bytes, or :class:`IntegrityError` if it was tampered with."""
    if len(sealed) < TAG_SIZE:
        raise FrameError(f"frame {h.seq}: a sealed payload of {len(sealed)} bytes has no room for its tag")
    plain = out[: len(sealed) - TAG_SIZE]
    try:
        aead.decrypt_into(payload_nonce(h.seq), sealed, header[: HEADER_BODY.size], plain)
    except InvalidTag:
        raise IntegrityError(
            f"chunk {h.seq} (bytes {h.offset}..{h.end}) failed its authentication: "
            "it was damaged or changed on the way and was not written",
            hint="check the cable or link and run the clone again",
        ) from None
    return plain


def decode_header(data: bytes | memoryview, limits: FrameLimits) -> ChunkHeader:
    """Parse and check one header; raise :class:`FrameError` on anything odd."""
    if len(data) != HEADER_SIZE:
        raise FrameError(f"frame header is {len(data)} bytes, expected {HEADER_SIZE}")
    body = data[: HEADER_BODY.size]
    magic, version, kind, codec, flags, seq, offset, raw_len, payload_len, digest = HEADER_BODY.unpack(body)
    if magic != FRAME_MAGIC:
        raise FrameError("data channel does not carry usb4-recovery frames (bad magic)")
    if version != FRAME_VERSION:
        raise FrameError(f"frame format version {version} is not {FRAME_VERSION}")
    if not hmac.compare_digest(bytes(data[HEADER_BODY.size :]), header_mac(limits.header_key, body)):
        raise FrameError(f"frame {seq}: header failed its authentication (damaged, or not from the paired peer)")
    expected_flags = ENCRYPTED if limits.encrypted and kind in SEALED else 0
    if flags != expected_flags:
        raise FrameError(f"frame {seq}: flags {flags:#x}, the plan says {expected_flags:#x}")
    try:
        kind = Kind(kind)
        codec = Codec(codec)
    except ValueError:
        raise FrameError(f"frame {seq}: unknown kind {kind} or codec {codec}") from None
    if kind is Kind.END:
        if raw_len or payload_len or offset or codec is not Codec.RAW:
            raise FrameError("END frame carries a range or payload")
        return ChunkHeader(seq, 0, 0, 0, kind, codec, digest)
    if kind in (Kind.REWIND, Kind.PASS):
        allowed = limits.rewinds if kind is Kind.REWIND else limits.passes
        if not allowed:
            raise FrameError(f"frame {seq}: a {kind.name} frame, which the plan does not allow")
        if (
            raw_len
            or payload_len
            or codec is not Codec.RAW
            or (kind is Kind.PASS and offset)
            or (kind is Kind.REWIND and not 0 < offset <= MAX_EPOCH)
        ):
            raise FrameError(f"{kind.name} frame {seq} carries a range or payload")
        return ChunkHeader(seq, offset, 0, 0, kind, codec, digest)
    if not 0 < raw_len <= min(limits.chunk_size, MAX_CHUNK_SIZE):
        raise FrameError(f"frame {seq}: length {raw_len} outside 1..{limits.chunk_size}")
    if offset + raw_len > limits.target_size:
        raise FrameError(f"frame {seq}: range {offset}+{raw_len} ends past the planned size {limits.target_size}")
    if kind in (Kind.ZERO, Kind.SAME):
        if payload_len or codec is not Codec.RAW:
            raise FrameError(f"frame {seq}: {kind.name} frame with a payload")
        if kind is Kind.SAME:
            _check_same(seq, offset, raw_len, digest, limits)
    elif kind is Kind.BLOCKS:
        _check_blocks(seq, offset, raw_len, payload_len, codec, limits)
    else:
        tag = TAG_SIZE if limits.encrypted else 0
        if codec is Codec.RAW:
            if payload_len != raw_len + tag:
                raise FrameError(f"frame {seq}: raw payload {payload_len} != length {raw_len} + {tag}")
        elif not tag < payload_len <= limits.max_payload:
            raise FrameError(f"frame {seq}: compressed payload {payload_len} out of bounds")
    return ChunkHeader(seq, offset, raw_len, payload_len, kind, codec, digest)


def _check_same(seq: int, offset: int, raw_len: int, digest: bytes, limits: FrameLimits) -> None:
    """A SAME frame skips a write: only for exactly a range (and its digest) the receiver offered."""
    held = limits.offered.digest_at(offset, raw_len) if limits.offered is not None else None
    if held is None or not hmac.compare_digest(held, digest):
        raise FrameError(
            f"frame {seq}: a SAME frame for bytes {offset}+{raw_len} that the receiver did not offer with that digest"
        )


def _check_blocks(seq: int, offset: int, raw_len: int, payload_len: int, codec: Codec, limits: FrameLimits) -> None:
    """A BLOCKS frame: only where the receiver said it takes them, for a range it offered, with exactly
    the digests such a chunk has."""
    offered = limits.offered.digest_at(offset, raw_len) if limits.offered is not None else None
    if not limits.blocks or offered is None:
        raise FrameError(f"frame {seq}: a BLOCKS frame for bytes {offset}+{raw_len}, which the receiver did not offer")
    expected = blocks.payload_size(raw_len) + (TAG_SIZE if limits.encrypted else 0)
    if codec is not Codec.RAW or payload_len != expected:
        raise FrameError(f"frame {seq}: a BLOCKS frame of {payload_len} bytes, not {expected}")


@dataclass(frozen=True, slots=True)
class SequenceState:
    """Where a :class:`FrameSequence` stands: what the next frame must be."""

    next_seq: int = 0
    next_offset: int = 0
    covered: int = 0  # bytes the first pass's frames covered
    last_end: int = -1  # end of the previous frame (grid checks)
    passes: int = 0  # PASS frames so far


class FrameSequence:
    """Checks that frames come in order, on the grid, within what the plan announced.

    Feed every decoded header to :meth:`accept`; after the END frame,
    :attr:`finished` is true and any further frame is an error. A REWIND
    frame is not accepted here: whoever asked for it checks it and calls
    :meth:`restore` with the state the stream goes back to.
    """

    def __init__(self, limits: FrameLimits | None = None, state: SequenceState | None = None) -> None:
        self.limits = limits
        self.finished = False
        self.restore(state or SequenceState())

    def state(self) -> SequenceState:
        return SequenceState(self.next_seq, self.next_offset, self.covered, self._last_end, self.passes)

    def restore(self, state: SequenceState) -> None:
        self.next_seq, self.next_offset, self.covered = state.next_seq, state.next_offset, state.covered
        self._last_end, self.passes = state.last_end, state.passes
        self.finished = False

    def accept(self, h: ChunkHeader) -> None:
        if h.kind is Kind.REWIND:
            raise FrameError(f"frame {h.seq}: a REWIND frame that nobody asked for")
        if self.finished:
            raise FrameError(f"frame {h.seq} after the END frame")
        if h.seq != self.next_seq:
            raise FrameError(f"frame {h.seq} arrived, expected frame {self.next_seq}")
        limits = self.limits
        announced = limits.frames if limits is not None else None
        if h.kind is Kind.END:
            if announced is not None and (h.seq < announced if self.passes else h.seq != announced):
                raise FrameError(f"END after {h.seq} frames, the plan announced {announced}")
            self.finished = True
            return
        if h.kind is Kind.PASS:
            if announced is not None and self.passes == 0 and h.seq != announced:
                raise FrameError(f"a PASS frame after {h.seq} frames, the plan announced {announced}")
            if self.passes >= MAX_PASSES:
                raise FrameError(f"more than {MAX_PASSES} passes")
            self.passes += 1
            self.next_seq += 1
            self.next_offset, self._last_end = 0, -1
            return
        if h.kind in (Kind.SAME, Kind.BLOCKS) and self.passes:
            raise FrameError(f"frame {h.seq}: a {h.kind.name} frame cannot replace a frame")
        if h.offset < self.next_offset:
            raise FrameError(
                f"frame {h.seq} at offset {h.offset} overlaps the previous frame (ended at {self.next_offset})"
            )
        if limits is not None:
            self._check_plan(h, limits)
        self.next_seq += 1
        self.next_offset = h.end
        if not self.passes:
            self.covered += h.raw_len

    def _check_plan(self, h: ChunkHeader, limits: FrameLimits) -> None:
        cell = h.offset // limits.chunk_size
        if (h.end - 1) // limits.chunk_size != cell:
            raise FrameError(f"frame {h.seq} crosses the {limits.chunk_size}-byte grid at {h.offset}+{h.raw_len}")
        if self.passes:  # a replacement: the receiver checks it against what it asked for or holds
            self._last_end = h.end
            return
        if (
            self._last_end > 0
            and (self._last_end - 1) // limits.chunk_size == cell
            and h.offset - self._last_end <= MERGE_GAP
        ):
            raise FrameError(f"frame {h.seq} is within {MERGE_GAP} bytes of the previous one in its grid cell")
        self._last_end = h.end
        if limits.frames is not None and h.seq >= limits.frames:
            raise FrameError(f"frame {h.seq} is beyond the {limits.frames} frames the plan announced")
        if limits.bytes is not None and self.covered + h.raw_len > limits.bytes:
            raise FrameError(f"frame {h.seq} goes past the {limits.bytes} bytes the plan announced")


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
        self.sequence = FrameSequence(limits)
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
