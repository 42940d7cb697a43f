"""Which ConfigFS directories usb4-recovery made, so it removes only those.

A small JSON file under ``/run`` (gone at reboot, like ConfigFS itself),
updated under an flock. Each entry is one directory with its kind (group or
stream), its owner (``link``: a clone's own streams, removed when the clone
ends; ``up``: made by ``recovery stream up``, removed by ``down``) and the pid
that made it. ``link`` entries whose process is dead were left by a killed
run and may be swept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from recovery.errors import LinkError

LEDGER_DIR = Path("/run/usb4-recovery")
VERSION = 1
MAX_BYTES = 1 << 20  # a ledger larger than this is not ours


@dataclass(frozen=True)
class Entry:
    path: str  # the ConfigFS directory
    kind: str  # "group" or "stream"
    owner: str  # "link" or "up"
    pid: int

    @property
    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class Ledger:
    def __init__(self, directory: Path | str = LEDGER_DIR) -> None:
        self.dir = Path(directory)
        self.file = self.dir / "streams.json"

    @contextlib.contextmanager
    def edit(self) -> Iterator[list[Entry]]:
        """The entries, locked; changes to the list are saved on exit."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.dir / "streams.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise LinkError(f"cannot keep the stream ledger in {self.dir}: {e.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._load()
            before = list(entries)
            yield entries
            if entries != before:
                self._save(entries)
        finally:
            os.close(lock)

    def entries(self) -> list[Entry]:
        with self.edit() as entries:
            return list(entries)

    def add(self, path: Path, kind: str, owner: str) -> None:
        with self.edit() as entries:
            entries[:] = [e for e in entries if e.path != str(path)]
            entries.append(Entry(str(path), kind, owner, os.getpid()))

    def find(self, path: Path) -> Entry | None:
        return next((e for e in self.entries() if e.path == str(path)), None)

    def _load(self) -> list[Entry]:
        try:
            with open(self.file, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise LinkError(f"cannot read {self.file}: {e.strerror}") from None
        try:
            doc = json.loads(raw) if len(raw) <= MAX_BYTES else None
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError("unknown format")
            return [Entry(str(e["path"]), str(e["kind"]), str(e["owner"]), int(e["pid"])) for e in doc["entries"]]
        except (ValueError, KeyError, TypeError) as e:
            raise LinkError(
                f"{self.file} is damaged ({e})",
                hint="check the streams with `recovery stream list`, then delete the file",
            ) from None

    def _save(self, entries: list[Entry]) -> None:
        tmp = self.file.with_suffix(".tmp")
        data = json.dumps({"version": VERSION, "entries": [asdict(e) for e in entries]}, indent=1)
        try:
            tmp.write_text(data + "\n")
            os.replace(tmp, self.file)
        except OSError as e:
            raise LinkError(f"cannot write {self.file}: {e.strerror}") from None
