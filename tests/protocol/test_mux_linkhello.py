"""The stdio multiplexer and the link hello."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.protocol.linkhello import LinkHelloError, decode_link_hello, encode_link_hello
from recovery.protocol.mux import MAX_RECORD, MUX_HEADER, MuxDecoder, MuxError, encode_record_header


@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.binary(min_size=1, max_size=500)), max_size=10))
def test_mux_round_trip_byte_at_a_time(records: list[tuple[int, bytes]]) -> None:
    stream = b"".join(encode_record_header(c, len(d)) + d for c, d in records)
    dec = MuxDecoder()
    got = []
    for b in stream:
        dec.receive_data(bytes([b]))
        while (r := dec.next_record()) is not None:
            got.append(r)
    assert got == records


@pytest.mark.parametrize("header", [MUX_HEADER.pack(2, 5), MUX_HEADER.pack(0, 0), MUX_HEADER.pack(1, MAX_RECORD + 1)])
def test_mux_rejects_bad_records(header: bytes) -> None:
    dec = MuxDecoder()
    dec.receive_data(header)
    with pytest.raises(MuxError):
        dec.next_record()


def test_link_hello() -> None:
    token = bytes(range(16))
    assert decode_link_hello(encode_link_hello(1, token)) == (1, token)
    with pytest.raises(LinkHelloError, match="magic"):
        decode_link_hello(b"GET / HTTP/1.1\r\nHost: x\r\n"[:22])


@given(st.binary(min_size=22, max_size=22))
def test_link_hello_random_bytes(data: bytes) -> None:
    try:
        decode_link_hello(data)
    except LinkHelloError:
        pass
