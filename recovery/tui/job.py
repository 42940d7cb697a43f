"""A running clone as the wizard shows it, folded from the engine's events (no Textual, no I/O).

One overall progress across the stages (finding what to copy, copying,
reading the target back, checking its filesystems), weighted by the bytes
each has to move, with an overall ETA; the throughput history; which stage
limits the clone now, in words that name the machine; and, when a clone
fails, what state the target is left in and how far the clone got.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from recovery import events, report
from recovery.engine.clone.progress import BOTTLENECK_MIN, PROCESSORS
from recovery.engine.peer.jobs import JobStarted
from recovery.units import human_duration, human_rate, human_size

HISTORY = 120  # throughput samples kept for the graph (two per second)
STAGES = (
    ("map", "finding what to copy"),
    ("transfer", "copying"),
    ("verify", "reading the target back"),
    ("check", "checking the filesystems on the target"),
)
STAGE_BARS = ("read", "compress", "link", "decompress", "write")


@dataclass
class JobView:
    """A clone, folded from engine events."""

    started: JobStarted
    host: str = ""  # this machine's name
    clock: Callable[[], float] = time.monotonic
    started_at: float = -1.0  # clock() when the clone started (set at creation)
    phase: str = "map"
    phase_text: str = "finding what to copy"
    stage: str = "map"
    source: str = ""
    target: str = ""
    mode: str = ""
    size: int = 0
    to_send: int = 0
    verify: bool = True
    planned: bool = False  # the receiver accepted the plan: from now on the target is being changed
    done: int = 0  # copying: bytes of the plan done (a resumed clone's part on the target included)
    durable: int = 0  # bytes on the target: what the receiver's last ack said (the same on both machines)
    total: int = 0
    rate: float = 0.0
    eta: float | None = None
    verify_done: int = 0
    verify_total: int = 0
    verify_rate: float = 0.0
    wire: int = 0
    level: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    bottleneck: str = ""
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    warnings: list[str] = field(default_factory=list)
    layout: list[str] = field(default_factory=list)  # a fitted clone: the layout, in words (report.fit_lines)
    summary: events.Summary | None = None
    ended_at: float | None = None

    def __post_init__(self) -> None:
        self.source = self.source or self.started.source
        self.target = self.target or self.started.target
        if self.started_at < 0:
            self.started_at = self.clock()

    @property
    def passive(self) -> bool:
        return self.started.driver != "here"

    @property
    def sending_host(self) -> str:
        return self.host if self.started.role == "sender" else self.started.peer

    @property
    def receiving_host(self) -> str:
        return self.started.peer if self.started.role == "sender" else self.host

    # --- folding events ---

    def apply(self, event: events.Event) -> None:
        if isinstance(event, events.Phase):
            self.phase, self.phase_text = event.name, event.message or event.name
            if event.name in ("map", "transfer", "verify"):
                self.stage = "check" if "filesystem" in self.phase_text else event.name
        elif isinstance(event, events.PlanMade):
            self.source, self.target, self.mode = event.source, event.target, event.mode
            self.size, self.to_send, self.verify, self.planned = event.size, event.to_send, event.verify, True
            self.total = event.to_send
        elif isinstance(event, events.Progress):
            self._progress(event)
        elif isinstance(event, events.Warning):
            self.warnings.append(event.message)
        elif isinstance(event, events.FitPlanned):
            self.layout = report.fit_lines(event)
        elif isinstance(event, events.Summary):
            self.summary = event
            self.ended_at = self.clock()

    def _progress(self, e: events.Progress) -> None:
        if e.phase == "verify":
            self.stage = "verify" if self.stage != "check" else "check"
            self.verify_done, self.verify_total, self.verify_rate = e.done, e.total, e.rate or self.verify_rate
            if self.mode == "used" and e.total and e.done >= e.total:
                self.stage = "check"
            return
        self.stage = "transfer"
        self.done, self.total, self.rate, self.eta = e.done, e.total, e.rate, e.eta
        self.durable = max(self.durable, e.durable)
        self.wire = e.wire or self.wire
        self.level = e.level or self.level
        if e.stages:
            self.stages, self.bottleneck = dict(e.stages), e.bottleneck
            self.history.append(e.rate)

    # --- the whole clone ---

    def stage_list(self) -> list[tuple[str, str]]:
        """The stages this clone goes through: no read-back without verification."""
        keep = [s for s in STAGES if self.verify or s[0] in ("map", "transfer")]
        return [s for s in keep if s[0] != "check" or self.mode != "exact"]

    def stage_line(self) -> str:
        """``Stage 2 of 4: copying``."""
        stages = self.stage_list()
        keys = [k for k, _ in stages]
        n = keys.index(self.stage) + 1 if self.stage in keys else 1
        return f"Stage {n} of {len(stages)}: {dict(stages).get(self.stage, self.phase_text)}"

    @property
    def planned_verify(self) -> int:
        if not self.verify:
            return 0
        return self.verify_total or (self.size if self.mode == "exact" else self.to_send)

    @property
    def fraction(self) -> float:
        """Of the whole clone, copying and reading back weighted by their bytes."""
        total = self.total + self.planned_verify
        if self.summary is not None:
            return 1.0
        return min(1.0, (self.done + self.verify_done) / total) if total else 0.0

    def overall_eta(self) -> float | None:
        """Seconds left for the whole clone (the read-back estimated at the copy's rate until it runs)."""
        if self.summary is not None:
            return 0.0
        copy_left = max(0, self.total - self.done)
        verify_left = max(0, self.planned_verify - self.verify_done)
        rate = self.verify_rate or self.rate
        if (copy_left and not self.rate) or (verify_left and not rate):
            return None
        return (copy_left / self.rate if copy_left else 0.0) + (verify_left / rate if verify_left else 0.0)

    def elapsed(self) -> float:
        return (self.ended_at or self.clock()) - self.started_at

    def numbers(self) -> tuple[str, str]:
        """What the bar measures, ``copied 12.0 of 51.0 GiB, read back 0 B of 51.0 GiB``, and
        ``310.0 MiB/s  ·  1:02 elapsed  ·  about 2:05 left in all``."""
        elapsed = f"{human_duration(self.elapsed())} elapsed"
        if self.stage == "map" or not self.total:
            return "", elapsed
        head = f"copied {of(self.done, self.total)}"
        if self.planned_verify:
            head += f", read back {of(self.verify_done, self.planned_verify)}"
        rate = self.rate if self.stage == "transfer" else self.verify_rate
        eta = self.overall_eta()
        left = f"about {human_duration(eta)} left in all" if eta is not None else "time left: measuring"
        return head, f"{human_rate(rate)}  ·  {elapsed}  ·  {left}"

    def shown_stages(self) -> dict[str, float]:
        """How busy each stage is, while the data flows: reading the target back or checking it moves
        nothing over the link, so nothing is shown then."""
        return self.stages if self.stage == "transfer" else {}

    def limit_row(self) -> str:
        """The stage bar that shows the limit: the processors' own, or the busy disk stage that waits for them."""
        if self.stage != "transfer" or not self.bottleneck:
            return ""
        disk = next((d for d, cpu in PROCESSORS.items() if cpu == self.bottleneck), "")
        if self.stages.get(self.bottleneck, 0.0) < BOTTLENECK_MIN <= self.stages.get(disk, 0.0):
            return disk
        return self.bottleneck

    def limit_text(self) -> str:
        """Which stage sets the pace now, naming the machine it runs on."""
        if self.stage in ("verify", "check"):
            what = "checking its filesystems" if self.stage == "check" else "reading it back"
            return (
                f"Checking the target on {self.receiving_host}: {what}; that disk's speed sets the pace "
                "now, nothing crosses the link."
            )
        if not self.stages:
            return "Measuring where the time goes..."
        return limit_words(self.bottleneck, self.sending_host, self.receiving_host)

    # --- a clone that failed ---

    def target_state(self, target_name: str) -> str:
        """What the target holds now, in one sentence a technician acts on."""
        if not self.planned:
            return f"{target_name} was not written: it is as it was."
        if self.done >= self.total and self.total:
            if self.summary is not None and self.summary.verified is False:
                return f"{target_name} holds the whole copy, but it did NOT verify: do not trust it."
            return f"{target_name} holds the whole copy, but it was not checked: do not trust it yet."
        return (
            f"{target_name} is now INCOMPLETE: its old partition table was wiped and "
            f"{human_size(self.durable)} of {human_size(self.total)} were written. Do not boot from it."
        )

    def how_far(self) -> str:
        """How far the clone got before it stopped."""
        stage = dict(self.stage_list()).get(self.stage, self.stage)
        return (
            f"It stopped while {stage}, at {self.fraction * 100:.0f}% of the clone, after "
            f"{human_duration(self.elapsed())}."
        )


def of(done: int, total: int) -> str:
    """``12.0 of 51.0 GiB``, or ``44.0 MiB of 1.0 GiB`` when the units differ."""
    left, right = human_size(done), human_size(total)
    unit = " " + right.split(" ")[-1]
    return f"{left.removesuffix(unit)} of {right}" if left.endswith(unit) else f"{left} of {right}"


def limit_words(stage: str, sending: str, receiving: str) -> str:
    """The limit in words: which part of the pipeline, on which machine."""
    return {
        "read": f"Reading the source disk on {sending} is the limit now: the disk itself is slow.",
        "compress": f"{sending}'s processors are the limit now (reading, hashing, compressing); "
        "compression adapts by itself.",
        "link": "The link is the limit now: it carries all it can.",
        "decompress": f"{receiving}'s processors are the limit now (checking, decompressing, writing).",
        "write": f"Writing the target disk on {receiving} is the limit now: the disk itself is slow.",
    }.get(stage, "No stage is saturated now: the clone runs below what each part can do.")
