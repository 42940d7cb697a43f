"""What a finished clone says, in words: one verdict and one list of rows for the CLI and the wizard.

The CLI prints the rows as ``  label  value`` lines; the wizard's summary
screen shows them as a table. Only what was checked from the target itself
is called verified (the receiver read it back; in used mode each filesystem's
checker ran on it).
"""

from __future__ import annotations

from typing import Any

from recovery import events
from recovery.units import area, human_duration, human_rate, human_size

Row = tuple[str, str]

KERNEL_WORDS = {  # recovery.engine.clone.health.COUNTED, for people
    "rx_crc_errors": "'RX CRC error' (corrupt frames on the cable; the digests catch them, the chunks are sent again)",
    "rx_hopid_failures": "'failed to allocate Rx HopID' (thunderbolt-net lost its HopID)",
    "ida_free_warnings": "'ida_free called' (a HopID freed that was not held)",
}


def verdict(s: events.Summary) -> str:
    if s.unreadable and s.verified is not False:
        state = "verified" if s.verified else "NOT verified"
        return (
            f"Clone complete, but {human_size(s.unreadable)} of the source could NOT be read (filled on the "
            f"target); everything that was read is {state}."
        )
    if s.verified:
        return "Clone complete and verified."
    if s.verified is None:
        return "Clone complete, NOT verified (read-back was skipped)."
    return "Clone FAILED verification."


def headline(s: events.Summary) -> str:
    """The verdict in a few words, for a title bar or the other machine's screen."""
    if s.verified is False:
        return "FAILED verification"
    if s.verified is None:
        return "Done, NOT verified"
    if s.unreadable:
        return f"Verified what was read; {human_size(s.unreadable)} of the source unreadable"
    return "Verified"


def whole_source_read(s: events.Summary) -> bool:
    """Is the whole-disk digest the source's (read whole in this run, a resume's skipped part too)?"""
    return s.source_digest and not s.unreadable


def planned(s: events.Summary) -> int:
    """Bytes of the plan: what the clone covers, the same on both machines."""
    return s.planned or s.bytes_written + s.zero_bytes + s.resumed


def moved(s: events.Summary) -> int:
    """Bytes of the plan this run moved: a resumed clone's part already on the target is no work of it."""
    return max(0, planned(s) - s.resumed)


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else human_duration(seconds)


def compression(level: str) -> str:
    """The level the compression ended at, in words."""
    if not level:
        return ""
    if level == "raw":
        return "none at the end: the data did not shrink, so it went as it is"
    if level == "0":
        return "off"
    return f"zstd level {level} at the end (it adapts to the link and the processors)"


def checked(s: events.Summary) -> list[str]:
    """What was checked from the target itself, a line each; empty when it was not read back."""
    if s.verified is None:
        return []
    if s.mode == "exact" and whole_source_read(s):
        lines = ["read the whole target back" + (": its BLAKE3 equals the source's" if s.verified else "")]
    elif s.mode == "exact":
        lines = ["read the whole target back" + ("" if s.mismatches else ": every chunk matched its BLAKE3")]
    else:
        lines = ["read back every block written to the target" + ("" if s.mismatches else ": each matched its BLAKE3")]
    if s.resumed and s.rescue:
        lines.append(
            f"the {human_size(s.resumed)} resumed from the target's journal: read back like the rest, and "
            "checked against the source on a sample of chunks (a failing disk is read as little as possible)"
        )
    elif s.resumed:
        lines.append(
            f"the {human_size(s.resumed)} resumed from the target's journal: read back like the rest, "
            "each chunk first checked against the source (what differed was sent again)"
        )
    if s.unchanged and s.parent:
        lines.append(
            f"the {human_size(s.unchanged)} unchanged since the earlier image {s.parent}: read back from it "
            "like the rest, against the source's digests"
        )
    elif s.unchanged:
        lines.append(
            f"the {human_size(s.unchanged)} unchanged since the earlier clone: read back like the rest, "
            "against the source's digests"
        )
    fs = sorted({c["check"] for c in s.checks if c["ok"] is True})
    if fs:
        lines.append("on the target, these found it clean: " + ", ".join(fs))
    return lines


def summary_rows(s: events.Summary, *, level: str = "") -> list[Row]:
    """Label and value rows, in the order people read them."""
    mode = "used blocks only" if s.mode == "used" else "every block"
    rows: list[Row] = [
        ("source", s.source),
        ("target", s.target),
        ("mode", f"{s.mode} ({mode}): {human_size(planned(s))} of {human_size(s.size)}"),
    ]
    if level:
        rows.append(("compress", compression(level)))
    zeros = f", and {human_size(s.zero_bytes)} of zeros made there without sending them" if s.zero_bytes else ""
    same = f" ({human_size(s.unchanged)} unchanged on the target, not sent)" if s.unchanged else ""
    rows.append(("sent", f"{human_size(s.bytes_sent)} on the link{same}"))
    rows.append(("written", f"{human_size(s.bytes_written)} to the target{zeros}"))
    if s.parent:
        rows.append(("parent", f"an increment of {s.parent}: the chunks that did not change are read from it"))
    rate = f" ({human_rate(moved(s) / s.seconds)})" if s.seconds and moved(s) else ""
    rows.append(("time", duration(s.seconds) + rate))
    rows += [("checked", line) for line in checked(s)]
    rows.append(("chunks", f"BLAKE3 {s.list_digest}  (the same on both machines)"))
    if s.image_digest:
        whose = (
            "b3sum of the whole source gives this"
            if whole_source_read(s)
            else "b3sum of the target gives this; the source was not read whole in this run"
        )
        rows.append(("image", f"BLAKE3 {s.image_digest}  ({whose})"))
    for c in s.checks:
        if c["ok"] is not True:
            where = f"partition {c['number']}" if c["number"] else "filesystem"
            state = "not run" if c["ok"] is None else "fails as on the source" if c.get("source_fails") else "FAILED"
            rows.append(("check", f"{where}: {c['check']} {state}" + (f" ({c['message']})" if c["message"] else "")))
    if s.mismatches:
        rows.append(("differs", f"{len(s.mismatches)} area(s): {areas(s.mismatches)}"))
    if s.resumed:
        rows.append(
            ("resumed", f"{human_size(s.resumed)} were on the target already (an interrupted clone), not sent again")
        )
    rows += rescue_rows(s)
    if s.kernel_log:
        said = ", ".join(f"{n} x {KERNEL_WORDS.get(k, k)}" for k, n in s.kernel_log.items())
        rows.append(("kernel", f"logged during the clone: {said}"))
    if s.resends:
        rows.append(("resent", f"{s.resends} chunk(s) arrived damaged and were sent again (the digests caught it)"))
    return rows


def rescue_rows(s: events.Summary) -> list[Row]:
    """What a rescue could not read, the files that hit, and where its mapfile is."""
    if not s.unreadable:
        return []
    count = len(s.unreadable_ranges)
    rows: list[Row] = [("unreadable", f"{human_size(s.unreadable)} in {count} area(s): {areas(s.unreadable_ranges)}")]
    rows += [("hit", hit_words(hit)) for hit in s.files_hit]
    if s.mapfile:
        rows.append(("mapfile", f"{s.mapfile}  (ddrescuelog reads it; run again to retry the bad areas)"))
    return rows


def hit_words(hit: dict[str, Any], shown: int = 8) -> str:
    """One entry of a ``files_hit`` list in words: where, the first ``shown`` files, and the tool's note."""
    where = f"partition {hit['partition']} ({hit['fstype'] or 'unknown'})" if hit["partition"] else "the disk"
    files = ", ".join(hit["files"][:shown])
    left = len(hit["files"]) - shown + hit.get("more", 0)
    more = f" and {left} more" if left > 0 else ""
    said = f"files hit: {files}{more}" if files else "no file named"
    note = f" ({hit['note']})" if hit.get("note") else ""
    return f"{where}: {said}{note}"


def areas(ranges: list[list[int]], shown: int = 5) -> str:
    """The first ``shown`` areas of a disk, in words (``4.0 KiB at 373.2 MiB``), and how many more."""
    more = f" and {len(ranges) - shown} more" if len(ranges) > shown else ""
    return ", ".join(area(o, n) for o, n in ranges[:shown]) + more


# How each partition of a fitted layout gets there (fitplan.Method), in words; a method not named here
# shows as its own word.
METHODS = {
    "keep": "kept",
    "move": "moved",
    "resize": "resized",
    "copy": "copied file by file into a new filesystem with its UUID and label",
}


def fit_how(method: str, size: int, new_size: int, moved: bool) -> str:
    """What happens to a fitted partition, in words: kept, moved, shrunk, grown, shrunk and moved."""
    if method == "resize" and new_size != size:
        word = "shrunk" if new_size < size else "grown"
        return f"{word} and moved" if moved else word
    return METHODS.get(method, method)


def fit_lines(e: events.FitPlanned) -> list[str]:
    """The layout a fitted clone writes, in words: a line for the disks, then one per partition, its old
    and its new size and place, and how it gets there."""
    lines = [f"fit ({e.fit}): the source's {human_size(e.source_size)} onto {human_size(e.target_size)}"]
    for p in e.parts:
        used = f", {human_size(int(p['used']))} used" if isinstance(p.get("used"), int) else ""  # type: ignore[call-overload]
        low = f", can shrink to {human_size(int(p['smallest']))}" if p.get("smallest") else ""  # type: ignore[call-overload]
        size, new_size = int(p["size"]), int(p["new_size"])  # type: ignore[call-overload]
        how = fit_how(str(p["method"]), size, new_size, p["start"] != p["new_start"])
        note = f" ({p['note']})" if p.get("note") else ""
        lines.append(
            f"partition {p['number']} {p['fstype'] or 'unknown'}: {human_size(size)} at "
            f"{human_size(int(p['start']))} -> {human_size(new_size)} at "  # type: ignore[call-overload]
            f"{human_size(int(p['new_start']))}, {how}{used}{low}{note}"  # type: ignore[call-overload]
        )
    return lines
