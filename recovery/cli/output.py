"""Showing events to people (a progress line on a terminal) or to scripts (JSON lines)."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from recovery import events
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
        self.err.write(f"error: {shown(err.message)}\n")
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
            return f"» {shown(e.message)}" if e.message else f"» {e.name}"
        if isinstance(e, events.Listening):
            where = f"{e.address}:{e.port}" if e.port else e.address
            return f"» waiting for a sender on {where} ({e.link})"
        if isinstance(e, events.PairingCode):
            why = f"{e.why}. " if e.why else ""
            return (f"» {why}pairing code: {e.code}\n"
                    f"  type it on the other machine (recovery send --code {e.code} ..., or in the wizard)")
        if isinstance(e, events.PairingAttempt):
            if e.ok:
                return None
            left = f" ({e.tries_left} wrong tries left before the code changes)" if e.tries_left else ""
            return f"» pairing with {shown(e.peer)} failed: {shown(e.message or e.reason)}{left}"
        if isinstance(e, events.PeerFound):
            speed = f"; speed: {e.speed}" if e.speed else ""
            machine = f", machine {shown(e.machine_id[:12])}" if e.machine_id else ""
            why = f"\n  link: {e.link_choice}" if e.link_choice else ""
            return (f"» paired with {shown(e.hostname)} ({shown(e.software)}{machine}) over {e.link} at "
                    f"{shown(e.address)}{speed}; {e.security}; session {e.session}{why}")
        if isinstance(e, events.PlanMade):
            sealed = "encrypted" if e.encrypted else "authenticated, not encrypted"
            lines = [f"» plan: {shown(e.source)} -> {shown(e.target)}",
                     f"  {e.mode} mode: {human_size(e.to_send)} of {human_size(e.size)} to copy ({sealed})"]
            for p in e.parts:
                how = "used blocks" if p["method"] == "used" else "whole"
                note = f" ({shown(p['note'])})" if p.get("note") else ""
                lines.append(f"  partition {p['number']} {shown(p['fstype'] or 'unknown')}: {how}{note}")
            if e.skipped:
                lines.append(f"  {human_size(e.skipped)} outside the partitions is not copied "
                             "(--mode exact copies it)")
            return "\n".join(lines)
        if isinstance(e, events.Warning):
            return f"warning: {shown(e.message)}"
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
        f"  source    {shown(s.source)}",
        f"  target    {shown(s.target)}",
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
    for c in s.checks:
        where = f"partition {c['number']}" if c["number"] else "filesystem"
        verdict = {True: "ok", False: "FAILED", None: "not run"}[c["ok"]]
        lines.append(f"  check     {where}: {shown(c['check'])} {verdict}"
                     + (f" ({shown(c['message'])})" if c["message"] and c["ok"] is not True else ""))
    if s.mismatches:
        ranges = ", ".join(f"{o}+{n}" for o, n in s.mismatches[:5])
        lines.append(f"  differs   {len(s.mismatches)} range(s): {ranges}")
    if s.kernel_log:
        said = ", ".join(f"{n} x {KERNEL_WORDS.get(k, k)}" for k, n in s.kernel_log.items())
        lines.append(f"  kernel    logged during the clone: {said}")
    return "\n".join(lines)


KERNEL_WORDS = {  # recovery.engine.health.COUNTED, for people
    "rx_crc_errors": "'RX CRC error' (corrupt frames on the cable; the digests catch them)",
    "rx_hopid_failures": "'failed to allocate Rx HopID' (thunderbolt-net lost its HopID)",
    "ida_free_warnings": "'ida_free called' (a HopID freed that was not held)",
}
