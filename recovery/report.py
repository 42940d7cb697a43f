"""What a finished clone says, in words: one verdict and one list of rows for the CLI and the wizard.

The CLI prints the rows as ``  label  value`` lines; the wizard's summary
screen shows them as a table. Only what was checked from the target itself
is called verified (the receiver read it back; in used mode each filesystem's
checker ran on it).
"""

from __future__ import annotations

from recovery import events
from recovery.units import human_duration, human_rate, human_size

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


def copied(s: events.Summary) -> int:
    """Bytes of the plan this side read (the sender) or wrote and made as zeros (the receiver)."""
    return s.bytes_read if s.role == "sender" else s.bytes_written + s.zero_bytes


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
        ("mode", f"{s.mode} ({mode}): {human_size(copied(s))} of {human_size(s.size)}"),
    ]
    if level:
        rows.append(("compress", compression(level)))
    if s.role == "sender":
        rows.append(
            ("sent", f"{human_size(s.bytes_sent)} on the link; {human_size(s.zero_bytes)} of zeros were not sent")
        )
    else:
        rows.append(
            (
                "written",
                f"{human_size(s.bytes_written)}, and {human_size(s.zero_bytes)} of zeros made without writing them",
            )
        )
    rate = f" ({human_rate(copied(s) / s.seconds)})" if s.seconds and copied(s) else ""
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
        ranges = ", ".join(f"{o}+{n}" for o, n in s.mismatches[:5])
        rows.append(("differs", f"{len(s.mismatches)} range(s): {ranges}"))
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
    ranges = ", ".join(f"{o}+{n}" for o, n in s.unreadable_ranges[:5])
    more = f" and {len(s.unreadable_ranges) - 5} more" if len(s.unreadable_ranges) > 5 else ""
    rows: list[Row] = [("unreadable", f"{s.unreadable} bytes in {len(s.unreadable_ranges)} range(s): {ranges}{more}")]
    for hit in s.files_hit:
        where = f"partition {hit['partition']} ({hit['fstype'] or 'unknown'})" if hit["partition"] else "the disk"
        files = ", ".join(hit["files"][:8])
        more = f" and {len(hit['files']) - 8} more" if len(hit["files"]) > 8 else ""
        said = f"files hit: {files}{more}" if files else "no file named"
        note = f" ({hit['note']})" if hit.get("note") else ""
        rows.append(("hit", f"{where}: {said}{note}"))
    if s.mapfile:
        rows.append(("mapfile", f"{s.mapfile}  (ddrescuelog reads it; run again to retry the bad areas)"))
    return rows
