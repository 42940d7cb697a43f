"""Reading what the kernel says in sysfs: one attribute at a time.

Used by both the disks (``/sys/block``) and the links (the Thunderbolt bus,
network interfaces), so a fix to how an attribute is read holds everywhere,
the appliance's first screen included.
"""

from __future__ import annotations

from pathlib import Path

ATTR_LIMIT = 4096  # sysfs attributes are at most a page


def read_attr(path: Path) -> str | None:
    """An attribute's text without the newline; None if absent, unreadable or empty."""
    try:
        with open(path, "rb") as f:
            return f.read(ATTR_LIMIT).decode(errors="replace").strip() or None
    except OSError:
        return None


def as_int(text: str | None) -> int | None:
    """An attribute's text as a number (decimal, or hex with 0x); None if absent or not a number."""
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None
