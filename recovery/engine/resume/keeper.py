"""The receiver's resume journal through one clone, from its start to its end.

A :class:`Keeper` begins with a new journal (:meth:`Keeper.fresh`) or the one a
resume continues (:meth:`Keeper.resumed`), writes each durable point before its
ack goes out, settles what was written since the last ack when the clone
fails, ends with the clone (a clean clone needs no journal; one that left
unreadable areas keeps it for a rescue run) and, last, keeps the journal if it
holds anything durable or removes it. Without a journal (``--no-journal``, no
capability "resume", or it could not be made) it only sends the acks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from recovery import events
from recovery.disks import identity
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.recvpipe import DurablePoint, ReceivePipeline
from recovery.engine.clone.target import Target
from recovery.engine.resume import journal
from recovery.errors import RecoveryError
from recovery.protocol import messages as m


class Keeper:
    def __init__(self, jrnl: journal.Journal | None, sink: events.EventSink, image: str | None = None) -> None:
        """``image``: the target is an image file, which records its own chunks: no journal, and the acks
        name the image as what holds the clone."""
        self.journal = jrnl
        self.sink = sink
        self.image = image
        self.acked = 0  # bytes the last ack told the sender are on the target (a resume's part included)

    @classmethod
    def fresh(
        cls,
        log_dir: Path | None,
        plan: m.Plan,
        target: Target,
        source_desc: str,
        sink: events.EventSink,
        source_host: str = "",
    ) -> Keeper:
        """A journal for a clone from the beginning (of a disk of ``source_host``), of the target as
        prepared (None: it could not be made)."""
        try:
            prepared = target.identity()
            jrnl = journal.Journal.create(
                log_dir,
                plan,
                prepared,
                identity.fingerprint(target.fd, target.size),
                source_desc,
                identity.describe(prepared),
                source_host,
            )
        except OSError as e:
            sink(events.Warning(f"no resume journal is kept ({e.strerror}): an interrupted clone starts over"))
            jrnl = None
        return cls(jrnl, sink)

    @classmethod
    def resumed(cls, found: journal.Found, start: int, rescue: bool, sink: events.EventSink) -> Keeper:
        """The journal a resume continues; what it held from frame ``start`` on no longer counts."""
        jrnl = journal.Journal(found.path, found.key, append_at=found.good_size)
        jrnl.done = len(found.frames)
        if start < len(found.frames):
            found.frames.truncate(start)
            jrnl.truncate(start)
        if rescue and not found.head.get("rescue"):
            jrnl.mark_rescue()
        keeper = cls(jrnl, sink)
        keeper.acked = found.frames.covered
        return keeper

    def durable(self, point: DurablePoint, frames: FrameList, send: Callable[[m.Ack], None]) -> None:
        """Frames up to ``point`` are on the target: journal them, then ack (saying where the journal is)."""
        ack = m.Ack(seq=point.seq, bytes=point.covered)

        def say(ack: m.Ack) -> None:
            send(ack)
            self.acked = ack.bytes

        jrnl = self.journal
        if jrnl is None:
            say(dataclasses.replace(ack, journal=self.image) if self.image and point.covered else ack)
            return
        jrnl.durable(
            point,
            frames,
            then=lambda: say(dataclasses.replace(ack, journal=str(jrnl.path) if jrnl.error is None else None)),
        )

    def drain(self) -> None:
        """Every line so far on the disk (the last ack out before the summary)."""
        if self.journal is not None:
            self.journal.drain()

    @property
    def holding(self) -> str | None:
        """The journal's path while it was written and holds part of the clone (an image target: its path
        once part of it is durable), else None."""
        if self.image is not None:
            return self.image if self.acked else None
        jrnl = self.journal
        return str(jrnl.path) if jrnl is not None and jrnl.error is None and jrnl.done > 0 else None

    def settle(self, pipe: ReceivePipeline) -> None:
        """The clone failed: make what was written since the last ack durable and journal it, if it can."""
        jrnl = self.journal
        if jrnl is None:
            if self.image is not None:  # the image's records are its journal: flush them
                try:
                    pipe.settle(lambda point: setattr(self, "acked", max(self.acked, point.covered)))
                except (RecoveryError, OSError) as e:
                    self.sink(events.Warning(f"what was written since the last flush may be lost: {e}"))
            return
        try:
            pipe.settle(lambda point: jrnl.durable(point, pipe.framelist))
            jrnl.drain()
        except (RecoveryError, OSError) as e:
            self.sink(events.Warning(f"what was written since the last flush is not in the journal: {e}"))
        if jrnl.error is not None:
            self.sink(
                events.Warning(
                    f"the resume journal could not be written ({jrnl.error.strerror}): "
                    "the clone cannot resume, it starts over"
                )
            )

    def end(self, target: Target, verified: bool | None, unreadable: int, *, record: bool = False) -> None:
        """The clone ran to its end: one with unreadable areas keeps its journal for a rescue run, a clean
        verified one onto a disk, when ``record`` (the peer takes a delta), as the record of the copy
        (for a delta clone later), each with the target's fingerprint as it is now; any other needs
        none."""
        jrnl, self.journal = self.journal, None
        if jrnl is None:
            return
        jrnl.drain()
        if jrnl.error is not None:
            self.sink(
                events.Warning(f"the resume journal could not be written ({jrnl.error.strerror}); it was given up")
            )
        try:
            if unreadable and verified is not False:
                jrnl.finish(_fingerprint(target), unreadable)
                jrnl.close()
            elif record and verified and target.is_block and jrnl.error is None:
                jrnl.keep(_fingerprint(target))  # the record a later clone of this source offers as a delta
                jrnl.close()
            else:
                jrnl.remove()
        except OSError as e:
            self.sink(events.Warning(f"the resume journal {jrnl.path} could not be closed: {e.strerror}"))

    def release(self) -> bool:
        """The last step, whatever happened: keep a journal that holds something durable, remove one that
        does not. True when one is kept (its target then stays too, for the resume)."""
        jrnl, self.journal = self.journal, None
        if jrnl is None:
            return self.image is not None and self.acked > 0
        if jrnl.done > 0:
            jrnl.close()
            return True
        jrnl.remove()  # nothing became durable: nothing to resume
        return False


def _fingerprint(target: Target) -> str:
    """The target's partition-table fingerprint as it is now."""
    if target.fd >= 0:
        return identity.fingerprint(target.fd, target.size)
    return identity.identify(target.path).fingerprint
