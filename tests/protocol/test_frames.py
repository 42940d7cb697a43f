"""Chunk frame codec: round trips, and every malformed header rejected with FrameError."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.protocol.frames import (
    HEADER_BODY,
    HEADER_SIZE,
    ChunkHeader,
    Codec,
    FrameDecoder,
    FrameError,
    FrameLimits,
    FrameSequence,
    Kind,
    decode_header,
    encode_header,
    end_header,
    header_check,
)

LIMITS = FrameLimits(chunk_size=1 << 20, target_size=1 << 30)


@st.composite
def headers(draw: st.DrawFn, seq: int | None = None) -> ChunkHeader:
    kind = draw(st.sampled_from([Kind.DATA, Kind.ZERO]))
    raw_len = draw(st.integers(1, LIMITS.chunk_size))
    offset = draw(st.integers(0, LIMITS.target_size - raw_len))
    if kind is Kind.ZERO:
        codec, payload = Codec.RAW, 0
    else:
        codec = draw(st.sampled_from(list(Codec)))
        payload = raw_len if codec is Codec.RAW else draw(st.integers(1, LIMITS.max_payload))
    return ChunkHeader(draw(st.integers(0, 2**40)) if seq is None else seq, offset, raw_len, payload,
                       kind, codec, draw(st.binary(min_size=32, max_size=32)))


@given(headers())
def test_round_trip(h: ChunkHeader) -> None:
    data = encode_header(h)
    assert len(data) == HEADER_SIZE
    assert decode_header(data, LIMITS) == h


@given(headers(), st.integers(0, HEADER_SIZE - 1), st.integers(1, 255))
def test_any_flipped_byte_is_caught(h: ChunkHeader, pos: int, flip: int) -> None:
    data = bytearray(encode_header(h))
    data[pos] ^= flip
    with pytest.raises(FrameError):
        decode_header(bytes(data), LIMITS)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        decode_header(data, LIMITS)
    except FrameError:
        pass


def _sealed(body: bytes) -> bytes:
    return body + header_check(body)


def _body(**fields: object) -> bytes:
    values = {"magic": b"U4CK", "version": 1, "kind": 0, "codec": 0, "flags": 0, "seq": 0, "offset": 0,
              "raw_len": 4096, "payload_len": 4096, "digest": bytes(32)}
    values.update(fields)
    return HEADER_BODY.pack(*values.values())


@pytest.mark.parametrize("fields, words", [
    ({"raw_len": (1 << 20) + 1, "payload_len": (1 << 20) + 1}, "outside"),
    ({"raw_len": 0, "payload_len": 0}, "outside"),
    ({"offset": (1 << 30) - 100}, "past the planned size"),
    ({"payload_len": 4095}, "raw payload"),
    ({"codec": 1, "payload_len": 1 << 22}, "out of bounds"),
    ({"kind": 1, "payload_len": 5}, "ZERO frame with a payload"),
    ({"kind": 7}, "unknown kind"),
    ({"codec": 9}, "unknown"),
    ({"flags": 1}, "flags"),
    ({"version": 2}, "version"),
    ({"magic": b"XXXX"}, "magic"),
    ({"kind": 2, "raw_len": 5, "payload_len": 0}, "END frame"),
])
def test_bad_fields_are_named(fields: dict[str, object], words: str) -> None:
    with pytest.raises(FrameError, match=words):
        decode_header(_sealed(_body(**fields)), LIMITS)


def test_sequence_rules() -> None:
    seq = FrameSequence()
    first = ChunkHeader(0, 0, 4096, 4096, Kind.DATA, Codec.RAW, bytes(32))
    seq.accept(first)
    with pytest.raises(FrameError, match="expected frame 1"):
        seq.accept(ChunkHeader(2, 8192, 4096, 4096, Kind.DATA, Codec.RAW, bytes(32)))
    with pytest.raises(FrameError, match="overlaps"):
        seq.accept(ChunkHeader(1, 4095, 4096, 4096, Kind.DATA, Codec.RAW, bytes(32)))
    seq.accept(end_header(1))
    assert seq.finished
    with pytest.raises(FrameError, match="after the END"):
        seq.accept(ChunkHeader(1, 8192, 4096, 4096, Kind.DATA, Codec.RAW, bytes(32)))


@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=6), st.data())
def test_stream_decoder_whole_and_byte_at_a_time(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b""
    offset = 0
    for i, p in enumerate(payloads):
        h = ChunkHeader(i, offset, len(p), len(p), Kind.DATA, Codec.RAW, blake3.blake3(p).digest())
        stream += encode_header(h) + p
        offset += len(p) + data.draw(st.integers(0, 5000))
    stream += encode_header(end_header(len(payloads)))
    whole = FrameDecoder(LIMITS)
    whole.receive_data(stream)
    frames = []
    while (f := whole.next_frame()) is not None:
        frames.append(f)
    assert [f.payload for f in frames[:-1]] == payloads and frames[-1].header.kind is Kind.END
    slow = FrameDecoder(LIMITS)
    got = []
    for b in stream:
        slow.receive_data(bytes([b]))
        while (f := slow.next_frame()) is not None:
            got.append(f)
    assert got == frames and slow.trailing == 0
