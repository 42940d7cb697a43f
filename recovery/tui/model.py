"""What the wizard shows, computed from plain data (no Textual, no I/O).

Disk rows and their refusals, the choice the user is building, and the
progress of a running clone folded from the engine's events. Screens only
render these; tests check them directly.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from recovery import events
from recovery.disks import identity, safety
from recovery.engine.jobs import CloneChoice, JobStarted
from recovery.protocol.messages import DiskInfo
from recovery.units import human_size

HISTORY = 120  # throughput samples kept for the sparkline (one per progress event)
STAGES = ("read", "compress", "link", "write")
STAGE_NAMES = {"read": "disk read", "compress": "compress", "link": "link", "write": "disk write"}
BOTTLENECK_TEXT = {
    "read": "Reading the source disk is the limit now: the cable could carry more.",
    "compress": "Compressing is the limit now: the processor is busy (compression adapts by itself).",
    "link": "The link is the limit now: the cable (or network) carries all it can.",
    "write": "Writing the target disk is the limit now: the cable could carry more.",
}


# --- disks ---------------------------------------------------------------


def short_name(disk: DiskInfo) -> str:
    """What the user types to confirm: ``sdb``, ``nvme0n1``, ``target.img``."""
    return os.path.basename(disk.path.rstrip("/")) or disk.path


def contents(disk: DiskInfo) -> str:
    """What is on a disk, in one line: partitions, filesystems, used space."""
    if not disk.partitions:
        return "no partition table, no filesystem found" if not disk.ptable else f"{disk.ptable}, no partitions"
    parts = []
    for p in disk.partitions:
        bits = [p.fstype or "unknown"]
        if p.label:
            bits.append(f'"{p.label}"')
        bits.append(human_size(p.size))
        if p.used is not None:
            bits.append(f"({human_size(p.used)} used)")
        parts.append(" ".join(bits))
    head = f"{disk.ptable}: " if disk.ptable else ""
    return head + " · ".join(parts)


def used_bytes(disk: DiskInfo) -> int | None:
    """Bytes in use on the disk's filesystems that say (None: none says)."""
    known = [p.used for p in disk.partitions if p.used is not None]
    return sum(known) if known else None


def source_refusal(disk: DiskInfo) -> str | None:
    """Why a disk cannot be the source (None: it can)."""
    if disk.size <= 0:
        return "it is empty"
    if disk.mountpoints:
        return f"mounted at {', '.join(disk.mountpoints)}: unmount it first"
    return None


def target_refusal(source: DiskInfo, target: DiskInfo) -> str | None:
    """Why ``target`` cannot receive ``source`` (None: it can)."""
    if source.identity and target.identity and identity.same_storage(source.identity, target.identity):
        return "it is the source disk, or the source lives on it"
    if target.refusal:
        return target.refusal
    if target.size < source.size:
        return f"too small: {human_size(target.size)}, the source needs {human_size(source.size)}"
    if target.identity is None:
        return "the other machine did not identify it (update usb4-recovery there)"
    if source.identity:
        mismatch = safety.sector_mismatch(source.identity, target.identity)
        if mismatch:
            return mismatch
    return None


# --- the choice being built ------------------------------------------------


@dataclass
class Choice:
    """The wizard's answers so far."""

    send: bool | None = None  # True: this machine's disk goes to the peer
    source: DiskInfo | None = None
    target: DiskInfo | None = None
    mode: str = "used"
    level: int | None = None  # None: auto, 0: off
    verify: bool = True

    def complete(self) -> CloneChoice:
        assert self.send is not None and self.source is not None and self.target is not None
        return CloneChoice(send=self.send, source=self.source, target=self.target, mode=self.mode,
                           level=self.level, verify=self.verify)


def level_text(level: int | None) -> str:
    if level is None:
        return "auto (adapts to the link and the processor)"
    return "off (raw)" if level == 0 else f"zstd level {level}"


# --- a running clone -------------------------------------------------------


@dataclass
class JobView:
    """A clone as the progress screen shows it, folded from engine events."""

    started: JobStarted
    phase: str = "map"
    phase_text: str = "finding what to copy"
    source: str = ""
    target: str = ""
    mode: str = ""
    to_send: int = 0
    done: int = 0
    total: int = 0
    rate: float = 0.0
    eta: float | None = None
    wire: int = 0
    level: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    bottleneck: str = ""
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    warnings: list[str] = field(default_factory=list)
    summary: events.Summary | None = None

    def __post_init__(self) -> None:
        self.source = self.source or self.started.source
        self.target = self.target or self.started.target

    @property
    def passive(self) -> bool:
        return self.started.driver != "here"

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def apply(self, event: events.Event) -> None:
        """Fold one engine event in."""
        if isinstance(event, events.Phase):
            self.phase = event.name
            self.phase_text = event.message or event.name
        elif isinstance(event, events.PlanMade):
            self.source, self.target = event.source, event.target
            self.mode, self.to_send = event.mode, event.to_send
        elif isinstance(event, events.Progress):
            self.phase = event.phase
            self.done, self.total = event.done, event.total
            self.rate, self.eta = event.rate, event.eta
            if event.phase == "transfer":
                self.wire = event.wire or self.wire
                self.level = event.level or self.level
                if event.stages:
                    self.stages = dict(event.stages)
                    self.bottleneck = event.bottleneck
                self.history.append(event.rate)
        elif isinstance(event, events.Warning):
            self.warnings.append(event.message)
        elif isinstance(event, events.Summary):
            self.summary = event


def stage_order(role: str) -> tuple[tuple[str, str], ...]:
    """(stage, name) for the stages a side measures, in the order data flows."""
    if role == "sender":
        return tuple((s, STAGE_NAMES[s]) for s in STAGES)
    return (("link", "link"), ("compress", "decompress"), ("write", "disk write"))
