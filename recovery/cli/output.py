"""Showing events to people (a progress line on a terminal) or to scripts (JSON lines)."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from recovery import events
from recovery.units import human_duration, human_rate, human_size

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
        self.err.write(f"error: {err.message}\n")
        if err.hint:
            self.err.write(f"hint: {err.hint}\n")
        self.err.flush()

    # --- text ---

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.err.write("\r\033[K")
            self._progress_shown = False

    def _progress(self, e: events.Progress) -> None:
        pct = 100.0 * e.done / e.total if e.total else 100.0
        line = (f"{e.phase:<8} {human_size(e.done):>10} / {human_size(e.total):<10} {pct:3.0f}%"
                f" {human_rate(e.rate):>12}  ETA {human_duration(e.eta)}")
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
            return f"» {e.message}" if e.message else f"» {e.name}"
        if isinstance(e, events.Listening):
            where = f"{e.address}:{e.port}" if e.port else e.address
            return f"» waiting for a sender on {where} ({e.link})"
        if isinstance(e, events.PeerFound):
            speed = f"; speed: {e.speed}" if e.speed else ""
            why = f"\n  link: {e.link_choice}" if e.link_choice else ""
            return (f"» peer {e.hostname} ({e.software}) over {e.link} at {e.address}{speed}; "
                    f"pairing code {e.pairing_code}{why}")
        if isinstance(e, events.PlanMade):
            parts = "; ".join(
                f"partition {p['number']} {p['fstype'] or 'unknown'}: "
                + ("used blocks" if p["method"] == "used" else "whole")
                for p in e.parts
            )
            return (f"» plan: {e.source} -> {e.target}\n"
                    f"  {e.mode} mode: {human_size(e.to_send)} of {human_size(e.size)} to copy"
                    + (f" ({parts})" if parts else ""))
        if isinstance(e, events.Warning):
            return f"warning: {e.message}"
        if isinstance(e, events.Summary):
            return summary_text(e)
        return None


def summary_text(s: events.Summary) -> str:
    if s.verified:
        head = "Clone complete and verified."
    elif s.verified is None:
        head = "Clone complete, NOT verified (read-back was skipped)."
    else:
        head = "Clone FAILED verification."
    copied = s.bytes_read if s.role == "sender" else s.bytes_written + s.zero_bytes
    mode = "used blocks only" if s.mode == "used" else "every block"
    lines = [
        head,
        f"  source    {s.source}",
        f"  target    {s.target}",
        f"  mode      {s.mode} ({mode}): {human_size(copied)} of {human_size(s.size)}",
    ]
    if s.role == "sender":
        lines.append(f"  sent      {human_size(s.bytes_sent)} on the link; {human_size(s.zero_bytes)} "
                     "of zeros were not sent")
    else:
        lines.append(f"  written   {human_size(s.bytes_written)}, and {human_size(s.zero_bytes)} of zeros "
                     "made without writing them")
    lines += [
        f"  time      {s.seconds:.1f} s" + (f" ({human_rate(copied / s.seconds)})" if s.seconds else ""),
        f"  chunks    BLAKE3 {s.list_digest}  (the same on both machines)",
    ]
    if s.image_digest:
        lines.append(f"  image     BLAKE3 {s.image_digest}  (b3sum of the whole source gives this)")
    if s.mismatches:
        shown = ", ".join(f"{o}+{n}" for o, n in s.mismatches[:5])
        lines.append(f"  differs   {len(s.mismatches)} range(s): {shown}")
    if s.kernel_log:
        said = ", ".join(f"{n} x {KERNEL_WORDS.get(k, k)}" for k, n in s.kernel_log.items())
        lines.append(f"  kernel    logged during the clone: {said}")
    return "\n".join(lines)


KERNEL_WORDS = {  # recovery.engine.health.COUNTED, for people
    "rx_crc_errors": "'RX CRC error' (corrupt frames on the cable; the digests catch them)",
    "rx_hopid_failures": "'failed to allocate Rx HopID' (thunderbolt-net lost its HopID)",
    "ida_free_warnings": "'ida_free called' (a HopID freed that was not held)",
}
