"""Showing events to people (a progress line on a terminal) or to scripts (JSON lines)."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from recovery import events, report
from recovery.units import human_duration, human_rate, human_size, shown

LOG_EVERY = 10.0  # seconds between progress lines when not on a terminal


class Output:
    """An event sink for the CLI.

    ``--json``: one JSON object per line on ``stream``. Otherwise: phases,
    warnings and the summary as text, progress as a redrawn line on a
    terminal (or a line every ten seconds in a log).
    """

    def __init__(self, *, json_mode: bool, stream: TextIO | None = None) -> None:
        self.json = json_mode
        self.stream = stream or sys.stdout
        self.err = sys.stderr
        self.tty = self.err.isatty()
        self._progress_shown = False
        self._last_log = 0.0

    def __call__(self, event: events.Event) -> None:
        if self.json:
            self.stream.write(events.to_json(event) + "\n")
            self.stream.flush()
            return
        if isinstance(event, events.Progress):
            self._progress(event)
            return
        self._clear_progress()
        text = self._text(event)
        if text is None:
            return
        target = self.stream if isinstance(event, events.Summary) else self.err
        target.write(text + "\n")
        target.flush()

    def error(self, err: events.Failed) -> None:
        if self.json:
            self(err)
        self._clear_progress()
        where = f"on {shown(err.peer)}: " if err.peer else ""
        self.err.write(f"error: {where}{shown(err.message)}\n")
        if err.hint:
            self.err.write(f"hint: {shown(err.hint)}\n")
        self.err.flush()

    # --- text ---

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.err.write("\r\033[K")
            self._progress_shown = False

    def _progress(self, e: events.Progress) -> None:
        pct = 100.0 * e.done / e.total if e.total else 100.0
        line = (
            f"{e.phase:<8} {human_size(e.done):>10} / {human_size(e.total):<10} {pct:3.0f}%"
            f" {human_rate(e.rate):>12}  ETA {human_duration(e.eta)}"
        )
        if e.bottleneck:
            line += f"  {e.bottleneck}-bound"
        if self.tty:
            width = os.get_terminal_size(self.err.fileno()).columns
            self.err.write("\r\033[K" + (line[: width - 1] if width >= 40 else line))
            self.err.flush()
            self._progress_shown = True
        elif time.monotonic() - self._last_log >= LOG_EVERY or e.done == e.total:
            self._last_log = time.monotonic()
            self.err.write(line + "\n")
            self.err.flush()

    def _text(self, e: events.Event) -> str | None:
        if isinstance(e, events.Phase):
            return f"» {shown(e.message)}" if e.message else f"» {e.name}"
        if isinstance(e, events.Listening):
            where = f"{e.address}:{e.port}" if e.port else e.address
            return f"» waiting for a sender on {where} ({e.link})"
        if isinstance(e, events.PairingCode):
            why = f"{e.why}. " if e.why else ""
            return (
                f"» {why}pairing code: {e.code}\n"
                f"  type it on the other machine (recovery send --code {e.code} ..., or in the wizard)"
            )
        if isinstance(e, events.PairingAttempt):
            if e.ok:
                return None
            left = f" ({e.tries_left} wrong tries left before the code changes)" if e.tries_left else ""
            left = " (that was the last try: a new code is shown now)" if e.new_code else left
            return f"» pairing with {shown(e.peer)} failed: {shown(e.message or e.reason)}{left}"
        if isinstance(e, events.PeerFound):
            speed = f"; speed: {e.speed}" if e.speed else ""
            machine = f", machine {shown(e.machine_id[:12])}" if e.machine_id else ""
            why = f"\n  link: {e.link_choice}" if e.link_choice else ""
            return (
                f"» paired with {shown(e.hostname)} ({shown(e.software)}{machine}) over {e.link} at "
                f"{shown(e.address)}{speed}; {e.security}; session {e.session}{why}"
            )
        if isinstance(e, events.PlanMade):
            sealed = "encrypted" if e.encrypted else "authenticated, not encrypted"
            lines = [
                f"» plan: {shown(e.source)} -> {shown(e.target)}",
                f"  {e.mode} mode: {human_size(e.to_send)} of {human_size(e.size)} to copy ({sealed})",
            ]
            for p in e.parts:
                how = "used blocks" if p["method"] == "used" else "whole"
                note = f" ({shown(p['note'])})" if p.get("note") else ""
                lines.append(f"  partition {p['number']} {shown(p['fstype'] or 'unknown')}: {how}{note}")
            if e.skipped:
                lines.append(f"  {human_size(e.skipped)} outside the partitions is not copied (--mode exact copies it)")
            return "\n".join(lines)
        if isinstance(e, events.Warning):
            return f"warning: {shown(e.message)}"
        if isinstance(e, events.FitPlanned):
            return fit_text(e)
        if isinstance(e, events.Fitted):
            return (
                f"» the fitted disk is ready ({e.seconds:.1f} s); the copy-on-write overlay holds "
                f"{human_size(e.overlay_bytes)}, the source is unchanged"
            )
        if isinstance(e, events.TableMoved):
            return (
                f"» {shown(e.target)} is larger than the source: its GPT's backup moved to the disk's end; "
                f"{human_size(e.free_bytes)} free after the last partition"
            )
        if isinstance(e, events.Summary):
            return summary_text(e)
        if isinstance(e, events.ImageChecked):
            return image_checked_text(e)
        if isinstance(e, events.ImageMounted):
            return image_mounted_text(e)
        if isinstance(e, events.ImagePlaces):
            return image_places_text(e)
        return None


def fit_text(e: events.FitPlanned) -> str:
    """The fitted layout, old and new side by side."""
    head, *rows = report.fit_lines(e)
    return "\n".join([f"» {head}", *(f"  {shown(row)}" for row in rows)])


def summary_text(s: events.Summary) -> str:
    rows = report.summary_rows(s)
    return "\n".join([report.verdict(s), *(f"  {label:<9} {shown(value)}" for label, value in rows)])


def image_checked_text(e: events.ImageChecked) -> str:
    head = (
        f"{len(e.bad)} damaged chunk(s) in {shown(e.path)}"
        if e.bad
        else f"Image checked: every chunk of {shown(e.path)} matches its BLAKE3."
    )
    rate = human_rate((e.data_bytes + e.zero_bytes) / e.seconds) if e.seconds > 0 else "-"
    lines = [
        head,
        f"  chunks    {e.chunks}: {human_size(e.data_bytes)} of data, {human_size(e.zero_bytes)} of zeros, "
        f"{human_size(e.stored_bytes)} stored; {e.seconds:.1f} s ({rate} of disk)",
        f"  root      BLAKE3 {e.root}",
    ]
    if e.disk_digest:
        same = " (as recorded when it was saved)" if e.disk_digest == e.recorded_disk_digest else ""
        lines.append(f"  disk      BLAKE3 {e.disk_digest}{same}")
    for (offset, length), where in list(zip(e.bad, e.bad_where, strict=False))[:20]:
        lines.append(f"  damaged   {human_size(length)} at byte {offset} ({human_size(offset)}), {shown(where)}")
    lines += [f"  holds     {shown(report.hit_words(hit))}" for hit in e.files_hit]
    if e.files_note:
        lines.append(f"  files     {shown(e.files_note)}")
    return "\n".join(lines)


def image_places_text(e: events.ImagePlaces) -> str:
    lines = [f"» {shown(e.mounted)} is mounted read-write: save images there"] if e.mounted else []
    lines.append("Folders that take an image:" if e.folders else "No mounted drive takes an image yet.")
    lines += [f"  {shown(f['path'])}   ({human_size(f['free'])} free)" for f in e.folders]
    if e.drives:
        lines.append("External drives to mount for it (`recovery image places --mount DEVICE`):")
    for d in e.drives:
        label = f" '{shown(d['label'])}'" if d["label"] else ""
        lines.append(f"  {d['device']}   {d['fstype']}{label}, {human_size(d['size'])} on {shown(d['disk'])}")
    return "\n".join(lines)


def image_mounted_text(e: events.ImageMounted) -> str:
    lines = [f"» {shown(e.path)} is mounted read-only: its disk ({human_size(e.size)}) reads as {shown(e.disk)}"]
    for p in e.parts:
        what = f"  partition {p['number']} ({shown(p['fstype'] or 'no filesystem found')}, {p['device']})"
        where = shown(p["mountpoint"]) if p["mountpoint"] else f"not mounted: {shown(p['why'])}"
        lines.append(f"{what}: {where}")
    lines.append(f"  Ctrl+C here (or `recovery image unmount {shown(e.directory)}`) unmounts all of it")
    return "\n".join(lines)
