"""Step 7: the clone runs. The same screen serves the driving and the passive side."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, Sparkline, Static

from recovery.tui.model import BOTTLENECK_TEXT, JobView, stage_order
from recovery.tui.widgets import StageBars, bar, plain
from recovery.units import human_duration, human_rate, human_size

if TYPE_CHECKING:
    from recovery.tui.app import WizardApp

PHASES = {"map": "Finding what to copy", "transfer": "Copying", "verify": "Verifying: reading the target back",
          "flush": "Flushing the target", "handshake": "Connecting"}


def numbers(job: JobView) -> str:
    """``12.0 GiB of 51.0 GiB · 310.0 MiB/s · ETA 2:05 · 8.1 GiB on the link``."""
    if not job.total:
        return ""
    bits = [f"{human_size(job.done)} of {human_size(job.total)}", human_rate(job.rate),
            f"ETA {human_duration(job.eta)}"]
    if job.phase == "transfer" and job.wire:
        bits.append(f"{human_size(job.wire)} on the link")
    return "  ·  ".join(bits)


class ProgressScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "abort", "Abort the clone")]

    def __init__(self, job: JobView) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        s = self.job.started
        title = (f"Controlled from {s.peer}: it chose this clone" if self.job.passive
                 else f"Copying {'to' if s.role == 'sender' else 'from'} {s.peer}")
        yield Static(plain(f"usb4-recovery  ·  {title}"), id="topbar")
        with Vertical(id="progress-body"):
            if self.job.passive and s.action:
                yield Static(plain(s.action + ". Esc aborts it.", style="bold"), id="action")
            yield Static(id="route")
            yield Static(id="phase", classes="section")
            yield Static(id="bar")
            yield Static(id="numbers")
            yield Label("Throughput", classes="section")
            yield Sparkline([], id="spark")
            yield Label("Where the time goes", classes="section")
            yield StageBars(id="stages")
            yield Static(id="limit")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        job = self.job
        route = Table.grid(padding=(0, 1))
        route.add_column(style="bold", width=4)
        route.add_column()
        route.add_row("From", plain(job.source))
        route.add_row("To", plain(job.target))
        self.query_one("#route", Static).update(route)
        phase = PHASES.get(job.phase, job.phase.capitalize())
        self.query_one("#phase", Static).update(plain(f"{phase}: {job.phase_text}" if job.phase == "map" else phase))
        self.query_one("#bar", Static).update(f"{bar(job.fraction, 60)} {job.fraction * 100:5.1f}%")
        self.query_one("#numbers", Static).update(numbers(job))
        self.query_one("#spark", Sparkline).data = list(job.history)
        self.query_one("#stages", StageBars).show(stage_order(job.started.role), job.stages, job.bottleneck)
        limit = BOTTLENECK_TEXT.get(job.bottleneck, "")
        if job.warnings:
            limit = f"Warning: {job.warnings[-1]}" + (f"\n{limit}" if limit else "")
        self.query_one("#limit", Static).update(plain(limit))

    def action_abort(self) -> None:
        cast("WizardApp", self.app).ask_abort()
