"""One JSON-lines log file per clone, in a place that survives the session.

Logs name disks and machines: they are created readable by their owner only.

``$USB4_RECOVERY_LOG_DIR`` when set; else ``/var/log/usb4-recovery/`` when
this process may write there (the appliance runs as root), else
``$XDG_STATE_HOME/usb4-recovery/`` (by default
``~/.local/state/usb4-recovery/``). Each line is an event in the documented
``--json`` form (:func:`recovery.events.to_json`). The resume journals of
the receiving side and the mapfiles of a rescue live in the same directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TextIO

from recovery import events

SYSTEM_DIR = Path("/var/log/usb4-recovery")


LOG_DIR_VARIABLE = "USB4_RECOVERY_LOG_DIR"


def default_dir() -> Path:
    """Where job logs go when nobody says otherwise."""
    chosen = os.environ.get(LOG_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    try:
        SYSTEM_DIR.mkdir(parents=True, exist_ok=True)
        if os.access(SYSTEM_DIR, os.W_OK | os.X_OK):
            return SYSTEM_DIR
    except OSError:
        pass
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "usb4-recovery"


class JobLog:
    """An append-only JSON-lines file for one clone; never fails the clone."""

    def __init__(self, directory: Path | None, role: str) -> None:
        self.path: Path | None = None
        self._file: TextIO | None = None
        directory = directory or default_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for n in range(100):
                path = directory / f"clone-{stamp}-{role}{f'-{n}' if n else ''}.jsonl"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                except FileExistsError:
                    continue
                self._file = os.fdopen(fd, "w", encoding="utf-8")
                self.path = path
                break
        except OSError:
            self._file = None  # no log is better than no clone

    def __call__(self, event: events.Event) -> None:
        if self._file is None:
            return
        try:
            self._file.write(events.to_json(event) + "\n")
            self._file.flush()
        except OSError:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
