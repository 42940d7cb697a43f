"""Human-readable sizes, rates and durations, parsing sizes from the CLI, and text safe to show."""

from __future__ import annotations

import re

from recovery.errors import UsageError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def human_size(n: float) -> str:
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def area(offset: int, length: int) -> str:
    """An area of a disk for people: ``4.0 KiB at 373.2 MiB``; where it starts is never in a unit above MiB
    (``at 1,907,348.6 MiB``), so areas compare at a glance and stay apart on a large disk."""
    if offset == 0:
        at = "the start"
    elif offset < 1 << 20:
        at = human_size(offset)
    else:
        at = f"{offset / (1 << 20):,.1f} MiB"
    return f"{human_size(length)} at {at}"


def human_rate(bytes_per_second: float) -> str:
    return human_size(bytes_per_second) + "/s"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def parse_size(text: str) -> int:
    """``4M``, ``512k``, ``1G``, ``4096`` (binary units) -> bytes."""
    match = re.fullmatch(r"\s*([0-9]{1,20})\s*([kmgt]?)(?:i?b)?\s*", text.lower(), re.ASCII)
    if not match:
        raise UsageError(f"bad size {shown(text[:40])!r}: use a number with an optional K, M, G or T")
    return int(match.group(1)) * _SUFFIX[match.group(2)]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
# Characters that change how the text around them shows without showing themselves: bidirectional
# overrides, zero-width characters, line and paragraph separators (a name could hide or reorder words).
_INVISIBLE = (
    0xAD,
    0x61C,
    *range(0x200B, 0x2010),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2070),
    0xFEFF,
)
_CONTROL.update({c: f"\\u{c:04x}" for c in _INVISIBLE})
_CONTROL_BUT_LINES = {c: v for c, v in _CONTROL.items() if c != 0x0A}


def shown(text: str, *, lines: bool = False) -> str:
    """Text that may come from the peer or the cable, safe for a terminal: control characters
    (escape sequences among them; line breaks too unless ``lines``) are written as ``\\xNN``."""
    return text.translate(_CONTROL_BUT_LINES if lines else _CONTROL)
