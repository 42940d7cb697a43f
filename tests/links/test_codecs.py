"""The two small wire formats of the cable links: the tbnet beacon and the stream handshake."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.link import beacon
from recovery.link import measure as ms
from recovery.link.tbstream import handshake as hs

NONCE = bytes(range(16))

# --- beacon ---


def test_beacon_round_trip() -> None:
    for b in (beacon.Beacon(beacon.QUERY, NONCE, 0, "alpha"), beacon.Beacon(beacon.OFFER, NONCE, 7554, "")):
        assert beacon.decode(beacon.encode(b)) == b


@given(
    kind=st.sampled_from([beacon.QUERY, beacon.OFFER]),
    nonce=st.binary(min_size=16, max_size=16),
    port=st.integers(1, 65535),
    name=st.text(max_size=80),
)
def test_beacon_round_trip_property(kind: int, nonce: bytes, port: int, name: str) -> None:
    b = beacon.Beacon(kind, nonce, port if kind == beacon.OFFER else 0, name)
    data = beacon.encode(b)
    assert len(data) <= beacon.MAX_DATAGRAM
    got = beacon.decode(data)
    assert (got.type, got.nonce, got.port) == (b.type, b.nonce, b.port)
    assert name.encode()[: beacon.MAX_NAME].decode(errors="replace") == got.name


def test_beacon_rejects_what_is_not_one() -> None:
    good = beacon.encode(beacon.Beacon(beacon.OFFER, NONCE, 7554, "beta"))
    with pytest.raises(beacon.NotOurs):
        beacon.decode(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(beacon.NotOurs):
        beacon.decode(good[:10])
    with pytest.raises(beacon.BeaconError, match="name length"):
        beacon.decode(good + b"junk")  # trailing bytes
    with pytest.raises(beacon.BeaconError, match="name length"):
        beacon.decode(good[:-1])  # cut short
    with pytest.raises(beacon.BeaconError, match="type"):
        beacon.decode(good[:5] + b"\x09" + good[6:])
    with pytest.raises(beacon.BeaconError, match="port"):
        beacon.decode(beacon.encode(beacon.Beacon(beacon.QUERY, NONCE))[:6] + b"\x00\x05" + good[8:])


def test_beacon_from_another_version_is_named() -> None:
    data = bytearray(beacon.encode(beacon.Beacon(beacon.OFFER, NONCE, 7554, "beta")))
    data[4] = 2
    with pytest.raises(beacon.VersionMismatch, match="version 2"):
        beacon.decode(bytes(data))


@given(st.binary(max_size=200))
def test_beacon_decoder_never_crashes(data: bytes) -> None:
    try:
        beacon.decode(data)
    except beacon.BeaconError:
        pass


# --- stream handshake ---

SYNC = hs.encode(hs.Record(hs.SYNC, hs.CONTROL, NONCE, 15, 14, hs.FLAG_TBNET))
READY = hs.encode(hs.Record(hs.READY, hs.CONTROL, NONCE, 15, 14, hs.FLAG_TBNET))


def scan(stream: bytes, step: int | None = None) -> tuple[list[hs.Record], int]:
    """Records found, and how many bytes were consumed up to the last READY."""
    sc = hs.Scanner()
    found, pos = [], 0
    while pos < len(stream):
        n = sc.want() if step is None else min(step, sc.want())
        record = sc.feed(stream[pos : pos + n])
        pos += len(stream[pos : pos + n])
        if record is not None:
            found.append(record)
            if record.type == hs.READY:
                break
    return found, pos


def test_handshake_round_trip() -> None:
    assert hs.decode(SYNC) == hs.Record(hs.SYNC, hs.CONTROL, NONCE, 15, 14, hs.FLAG_TBNET)
    assert len(SYNC) == hs.RECORD.size == 32
    hops = hs.Record(hs.HOPS, hs.CONTROL, NONCE, 15, 12)
    assert hs.decode(hs.encode(hops)) == hops
    with pytest.raises(ValueError):
        hs.encode(hs.Record(hs.HOPS, hs.DATA, NONCE, 14))  # rounds travel on the control stream only
    with pytest.raises(ValueError):
        hs.encode(hs.Record(hs.SYNC, hs.DATA, NONCE, 1 << 16))


@given(
    rtype=st.sampled_from([hs.SYNC, hs.READY]),
    channel=st.sampled_from([hs.CONTROL, hs.DATA]),
    nonce=st.binary(min_size=16, max_size=16),
    hopid=st.integers(0, 65535),
    data_hopid=st.integers(0, 65535),
    flags=st.integers(0, 255),
)
def test_handshake_round_trip_property(
    rtype: int, channel: int, nonce: bytes, hopid: int, data_hopid: int, flags: int
) -> None:
    record = hs.Record(rtype, channel, nonce, hopid, data_hopid, flags)
    assert hs.decode(hs.encode(record)) == record


@pytest.mark.parametrize("step", [None, 1, 3])
def test_scanner_skips_noise_and_cut_records_and_stops_at_ready(step: int | None) -> None:
    session = b"U4RS session bytes that must not be eaten"
    stream = b"\x00garbage U4" + SYNC[5:] + SYNC[:13] + SYNC + SYNC + READY + session
    found, used = scan(stream, step)
    assert [r.type for r in found] == [hs.SYNC, hs.SYNC, hs.READY]
    assert stream[used:] == session


def test_scanner_finds_a_record_right_after_a_lost_prefix() -> None:
    for cut in range(1, len(SYNC)):
        found, _ = scan(SYNC[cut:] + READY)
        assert [r.type for r in found] == [hs.READY]


@given(noise=st.binary(max_size=100), tail=st.binary(max_size=50))
def test_scanner_property(noise: bytes, tail: bytes) -> None:
    found, used = scan(noise + READY + tail)
    assert found and found[-1] == hs.Record(hs.READY, hs.CONTROL, NONCE, 15, 14, hs.FLAG_TBNET)
    assert (noise + READY + tail)[used:] == tail


def test_handshake_from_another_version_is_named() -> None:
    body = bytearray(SYNC[:-4])
    body[4] = 9
    record = bytes(body) + struct.pack("!I", zlib.crc32(bytes(body)))
    with pytest.raises(hs.HandshakeError, match="version 9"):
        hs.decode(record)


def test_a_version_1_peer_is_named_not_ignored() -> None:
    """Version 1 records are 28 bytes with the CRC after 24: recognised, and refused by name."""
    body = b"U4RS" + bytes([1, hs.SYNC, hs.CONTROL, 0]) + NONCE
    v1 = body + struct.pack("!I", zlib.crc32(body))
    with pytest.raises(hs.HandshakeError, match="version 1, this side 2"):
        scan(v1 + v1)


def test_handshake_corrupt_record_is_noise() -> None:
    bad = bytearray(SYNC)
    bad[10] ^= 1
    assert hs.decode(bytes(bad)) is None


# --- link measurement ---


def test_measure_records_round_trip_and_refuse_noise() -> None:
    for record in (
        ms.Record(ms.HAVE, None, ms.mask(("tbstream", "tbnet"))),
        ms.Record(ms.START, "tbnet", 1000),
        ms.Record(ms.RESULT, "tbstream", 2_600_000_000),
        ms.Record(ms.CHOICE, "tbnet"),
    ):
        assert ms.decode(ms.encode(record)) == record
    assert ms.unmask(ms.mask(("tbnet",))) == {"tbnet"}
    good = ms.encode(ms.Record(ms.START, "tbnet", 1000))
    with pytest.raises(ms.MeasureError):
        ms.decode(good[:-1])
    with pytest.raises(ms.MeasureError):
        ms.decode(good[:-1] + bytes([good[-1] ^ 1]))
    header = ms.block_header(7, True)
    assert ms.read_block_header(header + bytes(100)) == (7, True)
    with pytest.raises(ms.MeasureError):
        ms.read_block_header(bytes(16))


def test_the_faster_link_is_picked_and_a_tie_keeps_streams() -> None:
    assert ms.pick({"tbstream": 0.84e9, "tbnet": 2.4e9}) == "tbnet"
    assert ms.pick({"tbstream": 1e9, "tbnet": 1e9}) == "tbstream"
    text = ms.describe({"tbstream": 0.84e9, "tbnet": 2.4e9}, "tbnet", 2.2)
    assert text == (
        "thunderbolt-net: the faster when measured at the start "
        "(USB4STREAM 0.84 GB/s, thunderbolt-net 2.40 GB/s; 2.2 s)"
    )
