"""Making a stream's ConfigFS directory, tuning it, and removing exactly what was made.

A :class:`StreamSession` records every directory it creates in the ledger
(:mod:`.ledger`) and removes only those, on every exit path. Removing a
stream always writes 0 to both HopIDs first: ``rmdir`` alone leaves the
stream advertised to the peer. Which HopIDs a stream gets is
:mod:`.hopids`' business; this module only makes and removes.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import LinkError
from recovery.link.tbstream.configfs import StreamTree
from recovery.link.tbstream.ledger import Entry, Ledger


@dataclass(frozen=True)
class Tuning:
    """Ring size and interrupt throttling of one stream (local only: the peer sets its own)."""

    ring_size: int
    throttling: int | None = None  # ns; None keeps the kernel's default (8192)


# Only ring_size - 1 frames of 4 KiB are in flight: 1024 gives 4 MiB, enough for a
# chunk, and two streams of 1024 have been opened together where two of 4096 failed
# with ENOMEM. 2048 ns is the throttling of the only measured figure (0.84 GB/s).
DATA_TUNING = Tuning(ring_size=1024, throttling=2048)
CONTROL_TUNING = Tuning(ring_size=256)  # small messages only; the kernel's default
RING_FALLBACK = (512, 256)  # smaller rings tried when opening fails with ENOMEM


class StreamSession:
    """The ConfigFS directories one owner makes in one group."""

    def __init__(self, tree: StreamTree, ledger: Ledger, group: str, owner: str) -> None:
        self.tree = tree
        self.ledger = ledger
        self.group = group
        self.owner = owner
        self.made: list[Path] = []  # streams this session created, in order

    # --- making ---

    def make(self, name: str, tuning: Tuning | None = None) -> None:
        """Create stream ``name`` (and the group if needed) and set its rings."""
        self._ensure_group()
        path = self.tree.stream_path(self.group, name)
        with self.ledger.edit() as entries:
            old = next((e for e in entries if e.path == str(path)), None)
            if old is not None and old.owner == "link" and not old.alive and self.tree.remove_stream(self.group, name):
                entries.remove(old)  # left by a killed clone: ours to remove
                old = None
            try:
                self.tree.make_stream(self.group, name)
            except FileExistsError:
                raise LinkError(_in_use(path, old), hint=_in_use_hint(name, old)) from None
            entries.append(Entry(str(path), "stream", self.owner, _pid()))
        self.made.append(path)
        if tuning is not None:
            self.tune(name, tuning)

    def tune(self, name: str, tuning: Tuning) -> None:
        """Write ring size and throttling (only before the device is opened: EBUSY after)."""
        for attr, value in (("ring_size", tuning.ring_size), ("throttling", tuning.throttling)):
            if value is None:
                continue
            try:
                self.tree.write(self.group, name, attr, value)
            except OSError as e:
                raise LinkError(
                    f"cannot set {attr} {value} on stream {self.group}/{name}: {e.strerror}"
                    + (" (the device is open)" if e.errno == errno.EBUSY else "")
                ) from None

    def _ensure_group(self) -> None:
        path = self.tree.group_path(self.group)
        with self.ledger.edit() as entries:
            if path.is_dir():
                return
            self.tree.make_group(self.group)
            entries.append(Entry(str(path), "group", self.owner, _pid()))

    # --- removing ---

    def _remove_stream(self, path: Path) -> None:
        with self.ledger.edit() as entries:
            if self.tree.remove_stream(self.group, path.name):
                entries[:] = [e for e in entries if e.path != str(path)]
        if path in self.made:
            self.made.remove(path)

    def release(self) -> list[str]:
        """Remove the streams this session made (HopIDs zeroed first), then the group if we made it and it is empty.

        Never raises: returns what could not be removed.
        """
        failed = []
        for path in reversed(list(self.made)):
            try:
                self._remove_stream(path)
            except LinkError as e:
                failed.append(str(e))
        try:
            remove_empty_groups(self.tree, self.ledger)
        except LinkError as e:
            failed.append(str(e))
        return failed

    def keep(self) -> None:
        """Leave the streams in place (``recovery stream up``)."""
        self.made.clear()


def remove_empty_groups(tree: StreamTree, ledger: Ledger) -> None:
    """Remove groups usb4-recovery made once none of its streams are left in them."""
    with ledger.edit() as entries:
        for group in [e for e in entries if e.kind == "group" and _under(e.path, tree.root)]:
            if any(e.kind == "stream" and Path(e.path).parent == Path(group.path) for e in entries):
                continue
            if tree.remove(Path(group.path)):
                entries.remove(group)


def sweep(tree: StreamTree, ledger: Ledger) -> None:
    """Remove the streams of clones that were killed before they could clean up (HopIDs zeroed first)."""
    with ledger.edit() as entries:
        for e in [e for e in entries if e.kind == "stream" and e.owner == "link" and _under(e.path, tree.root)]:
            path = Path(e.path)
            if not e.alive and tree.remove_stream(path.parent.name, path.name):
                entries.remove(e)
    remove_empty_groups(tree, ledger)


def release_quietly(session: StreamSession) -> None:
    for problem in session.release():
        sys.stderr.write(f"warning: {problem}\n")


def _under(path: str, root: Path) -> bool:
    return Path(path).parent.parent == root or Path(path).parent == root


def _pid() -> int:
    return os.getpid()


def _in_use(path: Path, old: Entry | None) -> str:
    if old is None:
        return f"stream {path.parent.name}/{path.name} exists already and was not made by usb4-recovery"
    if old.owner == "up":
        return f"stream {path.parent.name}/{path.name} was made by `recovery stream up`"
    return f"stream {path.parent.name}/{path.name} is in use by another recovery process (pid {old.pid})"


def _in_use_hint(name: str, old: Entry | None) -> str:
    if old is not None and old.owner == "up":
        return f"remove it with `recovery stream down {name}`"
    if old is None:
        return "remove it (write 0 to both HopIDs, then rmdir) if nothing uses it, then try again"
    return "wait for the other clone to finish"
