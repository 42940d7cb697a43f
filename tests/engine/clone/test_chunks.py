from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recovery.disks.usedmap import merge
from recovery.engine.clone.chunks import plan_chunks

CHUNK = 1 << 16


@st.composite
def extent_lists(draw: st.DrawFn) -> list[tuple[int, int]]:
    raw = draw(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 1 << 17)), max_size=20))
    return merge(raw)


@given(extent_lists(), st.integers(0, 1 << 17))
def test_chunks_cover_every_extent_and_respect_the_grid(extents: list[tuple[int, int]], gap: int) -> None:
    chunks = list(plan_chunks(extents, CHUNK, gap))
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    covered = set()
    for prev, c in zip([None, *chunks], chunks, strict=False):
        assert 0 < c.length <= CHUNK
        assert c.offset // CHUNK == (c.end - 1) // CHUNK  # never crosses the grid
        if prev is not None:
            assert prev.end <= c.offset
        holes = {(c.offset + s, c.offset + s + n) for s, n in c.holes}
        for s, e in holes:
            assert c.offset < s < e < c.end
        covered.add((c.offset, c.end, frozenset(holes)))
    # Every byte of every extent lies in a chunk and outside its holes.
    for off, n in extents:
        for probe in {off, off + n - 1, off + n // 2}:
            inside = [c for c in chunks if c.offset <= probe < c.end]
            assert len(inside) == 1
            c = inside[0]
            assert not any(c.offset + s <= probe < c.offset + s + k for s, k in c.holes)


def test_gaps_below_the_threshold_share_a_chunk() -> None:
    chunks = list(plan_chunks([(0, 4096), (8192, 4096), (1 << 15, 4096)], CHUNK, merge_gap=8192))
    assert [(c.offset, c.length, c.holes) for c in chunks] == [
        (0, 12288, ((4096, 4096),)),
        (1 << 15, 4096, ()),
    ]
