"""Which stage limits a clone: named by back-pressure from both machines' shares, and for real."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from recovery.engine.clone.pipeline import Meter
from recovery.engine.clone.progress import CPU_BOUND, CpuShare, ProcessorWait, RateMeter, limit
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


@pytest.mark.parametrize(
    ("shares", "cpu", "expected"),
    [
        # issue 21: reading was busy, but on (or waiting for) a processor: the processors, not the disk
        ({"read": 0.97, "compress": 0.2, "link": 0.1, "decompress": 0.1, "write": 0.1}, {"read": 0.9}, "compress"),
        ({"read": 0.97, "compress": 0.2, "link": 0.1, "decompress": 0.1, "write": 0.1}, {"read": 0.1}, "read"),
        ({"read": 0.2, "compress": 0.2, "link": 0.9, "decompress": 0.2, "write": 0.95}, {"write": 0.8}, "decompress"),
        ({"read": 0.2, "compress": 0.2, "link": 0.9, "decompress": 0.2, "write": 0.95}, {"write": 0.1}, "write"),
        # a sender whose threads keep waiting for a processor (a CPU limit): no stage looks busy, or the
        # time it is throttled inside send looks like the link's
        ({"read": 0.1, "compress": 0.2, "link": 0.3, "decompress": 0.0, "write": 0.0}, {"sender": 1.0}, "compress"),
        ({"read": 0.0, "compress": 0.2, "link": 0.82, "decompress": 0.0, "write": 0.0}, {"sender": 0.9}, "compress"),
        ({"read": 0.0, "compress": 0.2, "link": 0.82, "decompress": 0.0, "write": 0.0}, {"sender": 0.1}, "link"),
        # a receiver short of processors holds the sender in send: its processors, not the link
        (
            {"read": 0.1, "compress": 0.2, "link": 0.95, "decompress": 0.3, "write": 0.2},
            {"receiver": 0.8},
            "decompress",
        ),
    ],
)
def test_a_busy_stage_that_waits_for_processors_names_the_processors(
    shares: dict[str, float], cpu: dict[str, float], expected: str
) -> None:
    assert limit(shares, cpu) == expected


def test_a_resumed_clone_counts_no_rate_for_what_the_target_held() -> None:
    """Issue 21: a resumed clone opened at "382.6 MiB/s · about 0:02 left": the part it skipped counted
    as done in the first half second."""
    meter = RateMeter(100 * MIB, done=60 * MIB)
    meter.update(60 * MIB)
    assert meter.rate == 0.0 and meter.eta(60 * MIB) is None and meter.average(60 * MIB) == 0.0


def test_processor_wait_counts_every_thread_and_forgets_those_that_ended(tmp_path: Path) -> None:
    now = [0.0]

    def task(tid: str, waited_ns: int) -> None:
        (tmp_path / tid).mkdir(exist_ok=True)
        (tmp_path / tid / "schedstat").write_text(f"123 {waited_ns} 7\n")

    task("10", 0)
    task("11", 5 * 10**8)
    waits = ProcessorWait(str(tmp_path), clock=lambda: now[0])
    now[0] = 2.0
    task("10", 4 * 10**8)  # 0.4 s of the 2 s in the run queue
    task("11", 10**9)  # 0.5 s more
    assert waits.sample() == pytest.approx(0.45)
    now[0] = 3.0
    (tmp_path / "11" / "schedstat").unlink()  # a thread that ended: nothing negative
    (tmp_path / "11").rmdir()
    task("10", 4 * 10**8)
    assert waits.sample() == 0.0
    now[0] = 4.0
    task("10", 4 * 10**8 + 5 * 10**9)  # more than the window (several threads): at most 1
    assert waits.sample() == 1.0


def test_a_stage_that_computes_is_told_from_one_that_waits() -> None:
    """The measure behind the rule: of a stage's busy time, the share on a processor (or waiting for one)."""
    computing, waiting = Meter(), Meter()
    share_computing, share_waiting = CpuShare(computing), CpuShare(waiting)
    token = computing.begin()
    data = bytes(1 << 20)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        hashlib.sha256(data).digest()
    computing.end(token)
    token = waiting.begin()
    threading.Event().wait(0.3)  # as a disk or a peer keeps it waiting
    waiting.end(token)
    assert share_computing.sample() > CPU_BOUND > share_waiting.sample()
