"""Chunk frame codec: round trips, the header MAC, sealed payloads, the grid and the plan's
totals, and every malformed header rejected with FrameError."""

from __future__ import annotations

import os

import blake3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import IntegrityError
from recovery.protocol import blocks
from recovery.protocol.frames import (
    HEADER_BODY,
    HEADER_SIZE,
    MAX_PASSES,
    MERGE_GAP,
    TAG_SIZE,
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
    header_mac,
    max_frames,
    open_payload,
    pass_header,
    rewind_header,
    seal_payload,
)

pytestmark = pytest.mark.smoke  # also run against the newest releases (tests/test_newest.py)
KEY = bytes(range(32))
LIMITS = FrameLimits(chunk_size=1 << 20, target_size=1 << 30, header_key=KEY)


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
    return ChunkHeader(
        draw(st.integers(0, 2**40)) if seq is None else seq,
        offset,
        raw_len,
        payload,
        kind,
        codec,
        draw(st.binary(min_size=32, max_size=32)),
    )


@given(headers())
def test_round_trip(h: ChunkHeader) -> None:
    data = encode_header(h, KEY)
    assert len(data) == HEADER_SIZE
    assert decode_header(data, LIMITS) == h


@given(headers(), st.integers(0, HEADER_SIZE - 1), st.integers(1, 255))
def test_any_flipped_byte_is_caught(h: ChunkHeader, pos: int, flip: int) -> None:
    data = bytearray(encode_header(h, KEY))
    data[pos] ^= flip
    with pytest.raises(FrameError):
        decode_header(bytes(data), LIMITS)


@given(headers())
def test_a_header_made_without_the_clones_key_is_refused(h: ChunkHeader) -> None:
    """A man in the middle can recompute a digest, not the MAC: no forged chunk steers a write."""
    with pytest.raises(FrameError, match="authentication"):
        decode_header(encode_header(h, bytes(32)), LIMITS)


def test_a_sealed_payload_opens_only_unchanged_and_under_its_own_header() -> None:
    aead = AESGCM(os.urandom(32))
    limits = FrameLimits(chunk_size=1 << 20, target_size=1 << 30, header_key=KEY, encrypted=True)
    plain = os.urandom(5000)
    h = ChunkHeader(3, 4096, len(plain), len(plain) + TAG_SIZE, Kind.DATA, Codec.RAW, blake3.blake3(plain).digest())
    header = encode_header(h, KEY, encrypted=True)
    assert decode_header(header, limits) == h
    out = bytearray(len(plain) + TAG_SIZE)
    sealed = bytes(seal_payload(aead, header, plain, memoryview(out)))
    assert plain not in sealed
    opened = memoryview(bytearray(len(plain)))
    wire = bytearray(sealed)
    assert bytes(open_payload(aead, h, header, memoryview(wire), opened)) == plain
    assert wire == sealed  # opened beside its input, never over it (cryptography >= 51 refuses that)
    for bad in (sealed[:-1] + bytes([sealed[-1] ^ 1]), bytes([sealed[0] ^ 1]) + sealed[1:]):
        with pytest.raises(IntegrityError, match="authentication"):
            open_payload(aead, h, header, memoryview(bytearray(bad)), opened)
    other = encode_header(
        ChunkHeader(4, 4096, h.raw_len, h.payload_len, Kind.DATA, Codec.RAW, h.digest), KEY, encrypted=True
    )
    with pytest.raises(IntegrityError):  # replayed as another frame
        open_payload(
            aead,
            ChunkHeader(4, 4096, h.raw_len, h.payload_len, Kind.DATA, Codec.RAW, h.digest),
            other,
            memoryview(bytearray(sealed)),
            opened,
        )
    with pytest.raises(FrameError, match="flags"):  # the plan says sealed: a clear frame is refused
        decode_header(encode_header(h, KEY), limits)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        decode_header(data, LIMITS)
    except FrameError:
        pass


def _sealed(body: bytes) -> bytes:
    return body + header_mac(KEY, body)


def _body(**fields: object) -> bytes:
    values = {
        "magic": b"U4CK",
        "version": 2,
        "kind": 0,
        "codec": 0,
        "flags": 0,
        "seq": 0,
        "offset": 0,
        "raw_len": 4096,
        "payload_len": 4096,
        "digest": bytes(32),
    }
    values.update(fields)
    return HEADER_BODY.pack(*values.values())


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"raw_len": (1 << 20) + 1, "payload_len": (1 << 20) + 1}, "outside"),
        ({"raw_len": 0, "payload_len": 0}, "outside"),
        ({"offset": (1 << 30) - 100}, "past the planned size"),
        ({"payload_len": 4095}, "raw payload"),
        ({"codec": 1, "payload_len": 1 << 22}, "out of bounds"),
        ({"kind": 1, "payload_len": 5}, "ZERO frame with a payload"),
        ({"kind": 7}, "unknown kind"),
        ({"codec": 9}, "unknown"),
        ({"flags": 1}, "flags"),
        ({"version": 1}, "version"),
        ({"magic": b"XXXX"}, "magic"),
        ({"kind": 2, "raw_len": 5, "payload_len": 0}, "END frame"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, object], words: str) -> None:
    with pytest.raises(FrameError, match=words):
        decode_header(_sealed(_body(**fields)), LIMITS)


def _frame(seq: int, offset: int, length: int = 4096) -> ChunkHeader:
    return ChunkHeader(seq, offset, length, length, Kind.DATA, Codec.RAW, bytes(32))


def test_frames_stay_on_the_grid_and_within_what_the_plan_announced() -> None:
    """A hostile sender cannot make the receiver keep a record per byte: frames are bounded by the disk."""
    limits = FrameLimits(chunk_size=1 << 20, target_size=1 << 30, header_key=KEY, frames=3, bytes=12288)
    with pytest.raises(FrameError, match="crosses"):
        FrameSequence(limits).accept(_frame(0, (1 << 20) - 100))
    seq = FrameSequence(limits)
    seq.accept(_frame(0, 0))
    with pytest.raises(FrameError, match="within"):  # two frames in one cell, closer than the merge gap
        seq.accept(_frame(1, 8192))
    seq = FrameSequence(limits)
    for i in range(3):
        seq.accept(_frame(i, i << 20))
    with pytest.raises(FrameError, match="beyond the 3 frames"):
        seq.accept(_frame(3, 3 << 20))
    seq = FrameSequence(FrameLimits(1 << 20, 1 << 30, KEY, frames=9, bytes=8192))
    seq.accept(_frame(0, 0))
    seq.accept(_frame(1, 1 << 20))
    with pytest.raises(FrameError, match="past the 8192 bytes"):
        seq.accept(_frame(2, 2 << 20))
    with pytest.raises(FrameError, match="announced 9"):
        seq.accept(end_header(2))


def test_the_most_frames_a_plan_may_announce() -> None:
    assert max_frames(4 << 20, 4 << 20) == 4  # a cell holds frames more than MERGE_GAP apart
    assert max_frames(10 << 20, 1 << 20) == 10
    assert max_frames(1, 4096) == 1
    assert MERGE_GAP == 1 << 20


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
    for i, p in enumerate(payloads):
        offset = (i << 20) + data.draw(st.integers(0, 5000))  # one frame per grid cell
        h = ChunkHeader(i, offset, len(p), len(p), Kind.DATA, Codec.RAW, blake3.blake3(p).digest())
        stream += encode_header(h, KEY) + p
    stream += encode_header(end_header(len(payloads)), KEY)
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


def test_rewind_and_pass_frames_only_where_the_plan_allows_them() -> None:
    for header in (rewind_header(3, 1), pass_header(3)):
        with pytest.raises(FrameError, match="does not allow"):
            decode_header(encode_header(header, KEY), LIMITS)
    allowed = FrameLimits(1 << 20, 1 << 30, KEY, rewinds=True, passes=True)
    assert decode_header(encode_header(rewind_header(3, 1), KEY), allowed) == rewind_header(3, 1)
    assert decode_header(encode_header(pass_header(7), KEY), allowed).kind is Kind.PASS
    with pytest.raises(FrameError, match="carries a range"):  # epoch 0 is the stream before any resend
        decode_header(encode_header(rewind_header(3, 0), KEY), allowed)
    with pytest.raises(FrameError, match="carries a range"):
        decode_header(_sealed(_body(kind=4, offset=5, raw_len=0, payload_len=0)), allowed)


def test_a_rewind_goes_back_to_a_state_the_sequence_gave_and_nobody_else_can_steer_it() -> None:
    limits = FrameLimits(1 << 20, 1 << 30, KEY, frames=4, bytes=4 * 4096, rewinds=True)
    seq = FrameSequence(limits)
    seq.accept(_frame(0, 0))
    before = seq.state()
    seq.accept(_frame(1, 1 << 20))
    seq.accept(_frame(2, 2 << 20))
    with pytest.raises(FrameError, match="nobody asked"):
        seq.accept(rewind_header(1, 1))
    seq.restore(before)
    seq.accept(_frame(1, 1 << 20))  # the same frame again, now in order
    assert seq.covered == 2 * 4096 and seq.next_seq == 2


def test_later_passes_restart_the_offsets_and_end_past_the_announced_frames() -> None:
    limits = FrameLimits(1 << 20, 1 << 30, KEY, frames=2, bytes=2 * 4096, passes=True)
    seq = FrameSequence(limits)
    with pytest.raises(FrameError, match="PASS frame after 0 frames"):
        FrameSequence(limits).accept(pass_header(0))
    seq.accept(_frame(0, 0))
    seq.accept(_frame(1, 1 << 20))
    seq.accept(pass_header(2))
    seq.accept(_frame(3, 0))  # replaces frame 0: offsets start again
    seq.accept(_frame(4, 1 << 20))
    with pytest.raises(FrameError, match="overlaps"):
        seq.accept(_frame(5, 0))
    seq.accept(pass_header(5))
    seq.accept(_frame(6, 1 << 20))
    assert seq.covered == 2 * 4096  # only the first pass counts towards the plan's bytes
    seq.accept(end_header(7))
    assert seq.finished
    bounded = FrameSequence(limits)
    bounded.accept(_frame(0, 0))
    bounded.accept(_frame(1, 1 << 20))
    for n in range(MAX_PASSES):
        bounded.accept(pass_header(2 + n))
    with pytest.raises(FrameError, match="more than"):
        bounded.accept(pass_header(2 + MAX_PASSES))


def test_each_epoch_has_keys_of_its_own() -> None:
    from recovery.protocol.pake import DataKeys

    keys = DataKeys(header=bytes(32), payload=bytes(range(32)))
    assert keys.for_epoch(0) is keys
    epochs = [keys.for_epoch(e) for e in range(1, 5)]
    every = {k.header for k in [keys, *epochs]} | {k.payload for k in [keys, *epochs]}
    assert len(every) == 10  # no key serves two epochs, or two purposes
    assert keys.for_epoch(3) == epochs[2]  # both sides derive the same


class _Offered:
    """What a receiver offered a delta clone: digests at exact ranges."""

    def __init__(self, held: dict[tuple[int, int], bytes]) -> None:
        self.held = held

    def digest_at(self, offset: int, length: int) -> bytes | None:
        return self.held.get((offset, length))


def _same(seq: int, offset: int, length: int, digest: bytes) -> ChunkHeader:
    return ChunkHeader(seq, offset, length, 0, Kind.SAME, Codec.RAW, digest)


def test_a_same_frame_is_taken_only_for_a_range_and_digest_the_receiver_offered() -> None:
    digest = blake3.blake3(b"held").digest()
    limits = FrameLimits(1 << 20, 1 << 30, KEY, offered=_Offered({(1 << 20, 4096): digest}))
    h = _same(0, 1 << 20, 4096, digest)
    assert decode_header(encode_header(h, KEY), limits) == h
    for other in (
        _same(0, 1 << 20, 4096, bytes(32)),  # another digest
        _same(0, 1 << 20, 2048, digest),  # part of the range
        _same(0, 2 << 20, 4096, digest),  # a range never offered
    ):
        with pytest.raises(FrameError, match="did not offer"):
            decode_header(encode_header(other, KEY), limits)
    with pytest.raises(FrameError, match="did not offer"):  # no offer at all (no delta, an old receiver)
        decode_header(encode_header(h, KEY), LIMITS)
    with pytest.raises(FrameError, match="SAME frame with a payload"):
        decode_header(_sealed(_body(kind=5, offset=1 << 20, raw_len=4096, payload_len=4096, digest=digest)), limits)


def test_a_same_frame_counts_in_the_first_pass_and_replaces_nothing() -> None:
    digest = blake3.blake3(b"held").digest()
    limits = FrameLimits(1 << 20, 1 << 30, KEY, frames=1, bytes=4096, passes=True)
    seq = FrameSequence(limits)
    seq.accept(_same(0, 0, 4096, digest))
    assert seq.covered == 4096
    seq.accept(pass_header(1))
    with pytest.raises(FrameError, match="cannot replace"):
        seq.accept(_same(2, 0, 4096, digest))


@given(st.binary(min_size=HEADER_BODY.size, max_size=HEADER_BODY.size), st.integers(0, 1 << 30))
def test_random_same_frames_never_pass_without_their_offer(body: bytes, offset: int) -> None:
    raw = bytearray(body)
    raw[:6] = b"U4CK\x02\x05"
    limits = FrameLimits(1 << 20, 1 << 30, KEY, offered=_Offered({(offset, 4096): bytes(32)}))
    try:
        h = decode_header(_sealed(bytes(raw)), limits)
    except FrameError:
        return
    assert (h.offset, h.raw_len, h.digest) == (offset, 4096, bytes(32))


def _blocks(seq: int, offset: int, length: int, payload_len: int) -> ChunkHeader:
    return ChunkHeader(seq, offset, length, payload_len, Kind.BLOCKS, Codec.RAW, bytes(32))


def test_a_blocks_frame_is_taken_only_where_the_receiver_said_for_a_range_it_offered() -> None:
    """Capability "delta-blocks": an older version of exactly this range is on the target, and the receiver
    said it takes BLOCKS frames; the payload is the digests of its blocks and their MAC (sealed: and the tag)."""
    P = blocks.payload_size(1 << 20)  # 64 digests and the MAC
    offered = _Offered({(1 << 20, 1 << 20): bytes(32), (3 << 20, 70000): bytes(32)})
    limits = FrameLimits(1 << 20, 1 << 30, KEY, offered=offered, blocks=True)
    h = _blocks(0, 1 << 20, 1 << 20, P)
    assert decode_header(encode_header(h, KEY), limits) == h
    short = _blocks(0, 3 << 20, 70000, blocks.payload_size(70000))  # 4 blocks and 4464 bytes: five
    assert decode_header(encode_header(short, KEY), limits) == short
    sealed = FrameLimits(1 << 20, 1 << 30, KEY, offered=offered, blocks=True, encrypted=True)
    h_sealed = _blocks(0, 1 << 20, 1 << 20, P + TAG_SIZE)
    assert decode_header(encode_header(h_sealed, KEY, encrypted=True), sealed) == h_sealed
    with pytest.raises(FrameError, match="flags"):  # a sealed clone's BLOCKS frame is sealed too
        decode_header(encode_header(h, KEY), sealed)
    for other, said in (
        (_blocks(0, 2 << 20, 1 << 20, P), "did not offer"),  # a range never offered
        (_blocks(0, 1 << 20, 4096, blocks.payload_size(4096)), "did not offer"),  # part of the range
        (_blocks(0, 1 << 20, 1 << 20, P - 32), f"not {P}"),  # a digest short
        (_blocks(0, 1 << 20, 1 << 20, 1 << 20), f"not {P}"),  # the chunk's bytes
    ):
        with pytest.raises(FrameError, match=said):
            decode_header(encode_header(other, KEY), limits)
    with pytest.raises(FrameError, match="did not offer"):  # offered, but the receiver did not say it takes them
        decode_header(encode_header(h, KEY), FrameLimits(1 << 20, 1 << 30, KEY, offered=offered))
    seq = FrameSequence(FrameLimits(1 << 20, 1 << 30, KEY, passes=True))
    seq.accept(h)
    seq.accept(pass_header(1))
    with pytest.raises(FrameError, match="cannot replace"):
        seq.accept(_blocks(2, 1 << 20, 1 << 20, P))


def test_a_blocks_payload_is_used_only_with_its_mac_and_its_own_header() -> None:
    data = os.urandom(200_000)
    digests = blocks.digests_of(data)
    assert [blake3.blake3(data[o - 4096 : o - 4096 + n]).digest() for o, n in blocks.block_ranges(4096, len(data))] == [
        digests[i : i + 32] for i in range(0, len(digests), 32)
    ]
    header = encode_header(_blocks(3, 4096, len(data), blocks.payload_size(len(data))), KEY)
    payload = blocks.encode(KEY, header, digests)
    assert b"".join(blocks.decode(KEY, header, payload, len(data))) == digests
    other = encode_header(_blocks(4, 4096, len(data), blocks.payload_size(len(data))), KEY)
    for key, head, body in (
        (KEY, header, bytes([payload[0] ^ 1]) + payload[1:]),  # a digest changed
        (KEY, other, payload),  # moved under another frame's header
        (bytes(32), header, payload),  # not the clone's key
    ):
        with pytest.raises(IntegrityError, match="authentication"):
            blocks.decode(key, head, body, len(data))
    with pytest.raises(IntegrityError, match="not"):
        blocks.decode(KEY, header, payload[:-1], len(data))
