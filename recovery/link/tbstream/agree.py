"""Making streams both hosts agree on, and removing exactly what was made.

HopIDs: the host whose UUID is smaller allocates (writes -1); the other
creates its directory and adopts what the kernel fills in from the peer's
published stream of the same name. If the peer has not published yet, the
adopter's HopIDs read 0: it removes the directory and tries again until the
deadline. Both hosts reach the same decision from the two UUIDs alone, so
they never race.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recovery.errors import LinkError, NoPeerError
from recovery.link.deadline import Deadline
from recovery.link.sysfs import uuid_key
from recovery.link.tbstream.configfs import StreamInfo, StreamTree
from recovery.link.tbstream.ledger import Entry, Ledger

ADOPT_RETRY = 0.25  # seconds between attempts to adopt the peer's HopIDs


def allocates(local_uuid: str, peer_uuid: str) -> bool:
    """True if this host allocates HopIDs (its UUID is the smaller one)."""
    if uuid_key(local_uuid) == uuid_key(peer_uuid):
        raise LinkError(f"this host and the peer have the same UUID {local_uuid}")
    return uuid_key(local_uuid) < uuid_key(peer_uuid)


class StreamSession:
    """The ConfigFS directories one owner makes in one group."""

    def __init__(self, tree: StreamTree, ledger: Ledger, group: str, owner: str) -> None:
        self.tree = tree
        self.ledger = ledger
        self.group = group
        self.owner = owner
        self.made: list[Path] = []  # streams this session created, in order

    # --- making ---

    def set_up(self, name: str, *, allocate: bool, deadline: Deadline) -> StreamInfo:
        """Create stream ``name`` with HopIDs agreed with the peer."""
        self._ensure_group()
        if allocate:
            self._make(name)
            info = self.tree.info(self.group, name)
            if not info.configured:  # not adopted from a stream the peer already publishes
                info = self.tree.allocate(self.group, name)
            if not info.configured:
                raise LinkError(f"the kernel allocated no HopIDs for stream {self.group}/{name}")
            return info
        while True:
            self._make(name)
            info = self.tree.info(self.group, name)
            if info.configured:
                return info
            self._remove_stream(info.path)
            if deadline.expired():
                raise NoPeerError(
                    f"the peer did not offer stream {name} on {self.group} in time",
                    hint="start `recovery` on the other machine too (it allocates the HopIDs), "
                    "or use --link tbnet / --to HOST:PORT",
                )
            deadline.pause(ADOPT_RETRY)

    def _ensure_group(self) -> None:
        path = self.tree.group_path(self.group)
        with self.ledger.edit() as entries:
            if path.is_dir():
                return
            self.tree.make_group(self.group)
            entries.append(Entry(str(path), "group", self.owner, _pid()))

    def _make(self, name: str) -> None:
        path = self.tree.stream_path(self.group, name)
        with self.ledger.edit() as entries:
            old = next((e for e in entries if e.path == str(path)), None)
            if old is not None and old.owner == "link" and not old.alive and self.tree.remove(path):
                entries.remove(old)  # left by a killed clone: ours to remove
                old = None
            try:
                self.tree.make_stream(self.group, name)
            except FileExistsError:
                raise LinkError(_in_use(path, old), hint=_in_use_hint(name, old)) from None
            entries.append(Entry(str(path), "stream", self.owner, _pid()))
        self.made.append(path)

    # --- removing ---

    def _remove_stream(self, path: Path) -> None:
        with self.ledger.edit() as entries:
            if self.tree.remove(path):
                entries[:] = [e for e in entries if e.path != str(path)]
        if path in self.made:
            self.made.remove(path)

    def release(self) -> list[str]:
        """Remove the streams this session made, then the group if we made it and it is empty.

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
    """Remove the streams of clones that were killed before they could clean up."""
    with ledger.edit() as entries:
        for e in [e for e in entries if e.kind == "stream" and e.owner == "link" and _under(e.path, tree.root)]:
            if not e.alive and tree.remove(Path(e.path)):
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
        return "remove it (rmdir) if nothing uses it, then try again"
    return "wait for the other clone to finish"
