"""What a finished clone's summary calls verified: only what was checked from the target, and the
source's digest only when this run read the whole source (recovery/report.py, used by the CLI and
the wizard alike)."""

from __future__ import annotations

import dataclasses

from recovery import events, report

MIB = 1 << 20
EXACT = events.Summary(
    role="receiver",
    mode="exact",
    source="/dev/sda",
    target="/dev/sdb",
    size=64 * MIB,
    bytes_read=0,
    bytes_sent=64 * MIB,
    bytes_written=64 * MIB,
    zero_bytes=0,
    seconds=1.0,
    list_digest="ab" * 32,
    image_digest="cd" * 32,
    verified=True,
    source_digest=True,
)


def words(s: events.Summary) -> str:
    return "\n".join([report.verdict(s), report.headline(s), *(f"{a} {b}" for a, b in report.summary_rows(s))])


def test_a_whole_exact_clone_says_the_target_equals_the_source() -> None:
    text = words(EXACT)
    assert "its BLAKE3 equals the source's" in text
    assert "b3sum of the whole source gives this" in text
    assert report.headline(EXACT) == "Verified"


def test_a_resumed_clone_claims_the_whole_source_digest_only_when_it_read_the_source_whole() -> None:
    resumed = dataclasses.replace(EXACT, resumed=40 * MIB)
    text = words(resumed)
    assert "equals the source's" in text and "whole source gives this" in text
    assert "each chunk first checked against the source" in text
    unknown = dataclasses.replace(resumed, source_digest=False)  # e.g. a 2.0 sender: the target's digest only
    text = words(unknown)
    assert "equals the source's" not in text and "whole source gives this" not in text
    assert "b3sum of the target gives this" in text


def test_a_rescue_is_never_plainly_verified() -> None:
    rescued = dataclasses.replace(EXACT, unreadable=1024, unreadable_ranges=[[4096, 1024]])
    text = words(rescued)
    assert "equals the source's" not in text and "whole source gives this" not in text
    assert report.headline(rescued) != "Verified" and "unreadable" in report.headline(rescued)
    assert "could NOT be read" in report.verdict(rescued)
    assert "unreadable 1024 bytes in 1 range(s): 4096+1024" in text


def test_only_a_read_back_is_called_verified() -> None:
    assert report.headline(dataclasses.replace(EXACT, verified=None)) == "Done, NOT verified"
    assert report.checked(dataclasses.replace(EXACT, verified=None)) == []
    assert report.headline(dataclasses.replace(EXACT, verified=False)) == "FAILED verification"


def test_a_check_that_fails_on_the_source_too_is_said_so_and_does_not_fail_the_copy() -> None:
    checks = [
        {
            "number": 1,
            "check": "ntfsfix -n",
            "ok": False,
            "source_fails": True,
            "message": "the source fails the same check (ntfsfix): copied as it is",
        }
    ]
    text = words(dataclasses.replace(EXACT, mode="used", checks=checks))
    assert "partition 1: ntfsfix -n fails as on the source" in text
    assert "FAILED" not in text and report.headline(dataclasses.replace(EXACT, checks=checks)) == "Verified"
