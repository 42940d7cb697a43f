"""A delta offer's digest pages: round trips, and whatever a receiver sends only ever a protocol error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.protocol import delta
from recovery.protocol import messages as m
from recovery.protocol.frames import FrameError

pytestmark = pytest.mark.smoke
CHUNK = 1 << 20
SIZE = 1 << 30


@st.composite
def entries(draw: st.DrawFn) -> list[delta.Entry]:
    cells = sorted(draw(st.sets(st.integers(0, SIZE // CHUNK - 1), max_size=20)))
    out = []
    for cell in cells:
        start = draw(st.integers(0, CHUNK - 1))
        length = draw(st.integers(1, CHUNK - start))
        out.append((cell * CHUNK + start, length, draw(st.binary(min_size=32, max_size=32))))
    return out


@given(entries())
def test_pages_round_trip(wanted: list[delta.Entry]) -> None:
    got: list[delta.Entry] = []
    for page in delta.encode_pages(wanted):
        body = m.decode_body(m.encode_message(page)[4:])
        assert isinstance(body, m.Digests)
        got += delta.decode_page(body, len(got), got[-1][0] + got[-1][1] if got else 0, CHUNK, SIZE)
    assert got == wanted


def test_a_page_has_as_many_ranges_as_digests_in_order_on_the_grid() -> None:
    d = "ab" * 32
    for ranges, words in (
        (None, "follow on"),
        ("00" * 24, "not as many"),
        ("zz" * 12, "hexadecimal"),
        (delta.RANGE.pack(CHUNK - 10, 20).hex(), "across"),
        (delta.RANGE.pack(SIZE - 10, 20).hex(), "outside"),
        (delta.RANGE.pack(0, 0).hex(), "outside"),
    ):
        with pytest.raises(FrameError, match=words):
            delta.decode_page(m.Digests(first=0, digests=d, ranges=ranges), 0, 0, CHUNK, SIZE)
    with pytest.raises(FrameError, match="out of order"):  # before what the last page ended at
        delta.decode_page(m.Digests(first=1, digests=d, ranges=delta.RANGE.pack(0, 4096).hex()), 1, 8192, CHUNK, SIZE)


@given(st.integers(0, 3), st.text("0123456789abcdef", max_size=200), st.text("0123456789abcdefx", max_size=100))
def test_any_page_only_ever_raises_a_protocol_error(first: int, digests: str, ranges: str) -> None:
    try:
        delta.decode_page(m.Digests(first=first, digests=digests, ranges=ranges), 0, 0, CHUNK, SIZE)
    except FrameError:
        pass
