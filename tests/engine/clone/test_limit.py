"""Which stage limits a clone: named by back-pressure from both machines' shares, and for real."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from recovery.engine.clone.progress import limit
from tests.helpers import CODE, MIB, Recovery, receiver


@pytest.mark.parametrize(
    ("shares", "link_known", "expected"),
    [
        # the cable carries all it can: the sender waits in send, nothing after it is busy
        ({"read": 0.3, "compress": 0.5, "link": 0.95, "decompress": 0.2, "write": 0.3}, True, "link"),
        # the sending machine's processors are the limit: the receiver only waits for data
        ({"read": 0.2, "compress": 0.93, "link": 0.05, "decompress": 0.1, "write": 0.1}, True, "compress"),
        # a slow target disk pushes back through the link: the sender waits in send too
        ({"read": 0.2, "compress": 0.4, "link": 0.96, "decompress": 0.2, "write": 0.91}, True, "write"),
        ({"read": 0.2, "compress": 0.4, "link": 0.9, "decompress": 0.85, "write": 0.2}, True, "decompress"),
        ({"read": 0.97, "compress": 0.2, "link": 0.1, "decompress": 0.1, "write": 0.1}, True, "read"),
        ({"read": 0.3, "compress": 0.3, "link": 0.3, "decompress": 0.3, "write": 0.3}, True, ""),
        # an older sender says nothing: the receiver's wait in recv is all it knows
        ({"link": 0.97, "decompress": 0.1, "write": 0.2}, False, "link"),
        ({"link": 0.97, "decompress": 0.1, "write": 0.8}, False, "write"),
    ],
)
def test_the_limit_is_found_from_the_end_of_the_pipeline(
    shares: dict[str, float], link_known: bool, expected: str
) -> None:
    assert limit(shares, link_known=link_known) == expected


def _text_image(path: Path, mib: int) -> None:
    """Text of random words: it compresses, slowly at zstd's highest level."""
    rng = random.Random(12)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4000)]
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(b" ".join(rng.choices(words, k=MIB // 5))[:MIB].ljust(MIB, b"\n"))


def test_a_sender_short_of_processor_is_named_on_both_machines(tmp_path: Path) -> None:
    """One slow compressing thread (zstd level 19) over loopback: the cable is idle, the receiver waits
    in recv nearly all the time. Both must name the sending machine's processors, not the link."""
    source, target = tmp_path / "text.img", tmp_path / "copy.img"
    _text_image(source, 24)
    rx, port = receiver(str(target), "--yes")
    tx = Recovery(
        "send",
        "--code",
        CODE,
        "--source",
        str(source),
        "--to",
        f"127.0.0.1:{port}",
        "--mode",
        "exact",
        "--level",
        "19",
        "--workers",
        "1",
    )
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    for side in (tx, rx):
        named = [e["bottleneck"] for e in side.events if e.get("event") == "progress" and e.get("stages")]
        assert len(named) >= 3, side.events[-3:]
        assert named.count("compress") >= len(named) * 2 // 3, named
        assert "link" not in named, named
        stages = next(e["stages"] for e in reversed(side.events) if e.get("event") == "progress" and e.get("stages"))
        assert set(stages) == {"read", "compress", "link", "decompress", "write"}, stages
