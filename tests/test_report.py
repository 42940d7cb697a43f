"""What a finished clone's summary calls verified: only what was checked from the target, and the
source's digest only when this run read the whole source (recovery/report.py, used by the CLI and
the wizard alike)."""

from __future__ import annotations

import dataclasses

from recovery import events, report
from recovery.units import area

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
    assert "unreadable 1.0 KiB in 1 area(s): 1.0 KiB at 4.0 KiB" in text


def test_areas_read_in_sizes_and_positions_people_compare() -> None:
    """Issue 21: ``391380992+4096`` was what the unreadable areas looked like."""
    assert area(391380992, 4096) == "4.0 KiB at 373.2 MiB"
    assert area(0, 512) == "512 B at the start" and area(4096, 4096) == "4.0 KiB at 4.0 KiB"
    assert area(2 * 10**12, 1 << 20) == "1.0 MiB at 1,907,348.6 MiB"  # never "at 1.8 TiB": areas stay apart
    ranges = [[n << 20, 4096] for n in range(7)]
    assert report.areas(ranges).endswith("4.0 KiB at 4.0 MiB and 2 more")


def test_each_quantity_is_one_number_and_a_zero_is_not_said() -> None:
    """Issue 21: "0 B of zeros were not sent"; the mode row and the rate from what this run moved."""
    s = dataclasses.replace(EXACT, planned=64 * MIB, resumed=48 * MIB, seconds=2.0, bytes_written=16 * MIB)
    rows = dict(report.summary_rows(s))
    assert rows["mode"] == "exact (every block): 64.0 MiB of 64.0 MiB"
    assert rows["written"] == "16.0 MiB to the target" and "zeros" not in words(s)
    assert rows["time"] == "2.0 s (8.0 MiB/s)"  # 16 MiB moved in 2 s: the resumed 48 MiB were no work of it
    zeros = dict(report.summary_rows(dataclasses.replace(s, zero_bytes=MIB)))
    assert zeros["written"] == "16.0 MiB to the target, and 1.0 MiB of zeros made there without sending them"
    sender = dict(report.summary_rows(dataclasses.replace(s, role="sender", bytes_read=64 * MIB)))
    assert sender == rows  # the same rows on both machines


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


def test_a_delta_clone_says_how_much_was_unchanged_and_that_it_was_read_back_too() -> None:
    """Issue 23: "9.8 MiB on the link (412.0 MiB unchanged on the target, not sent)"."""
    s = dataclasses.replace(EXACT, planned=64 * MIB, unchanged=60 * MIB, bytes_sent=4 * MIB)
    rows = report.summary_rows(s)
    assert dict(rows)["sent"] == "4.0 MiB on the link (60.0 MiB unchanged on the target, not sent)"
    checked = [b for a, b in rows if a == "checked"]
    assert any("60.0 MiB unchanged since the earlier clone: read back like the rest" in line for line in checked)
    assert "unchanged" not in dict(report.summary_rows(EXACT))["sent"]
