"""The clone runs: one overall progress across its stages. The same screen serves both sides.

What must never scroll away comes first (the stage, the bar, the numbers,
the limit); the route, the rate graph and the stage bars follow.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from recovery.tui.job import JobView
from recovery.tui.messages import AbortAsked
from recovery.tui.widgets import Bar, RateGraph, StageBars, plain, stage_names


def title(job: JobView) -> str:
    """Who drives the clone, and in rescue mode, that first (a narrow screen cuts the end)."""
    s = job.started
    if job.passive:
        return (
            f"Rescue mode, controlled from {s.peer}" if s.rescue else f"Controlled from {s.peer}: it chose this clone"
        )
    way = f"{'to' if s.role == 'sender' else 'from'} {s.peer}"
    return f"Rescue mode: copying {way}" if s.rescue else f"Copying {way}"


class ProgressScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "abort", "Abort the clone")]

    def __init__(self, job: JobView) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        s = self.job.started
        yield Static(plain(f"usb4-recovery  ·  {title(self.job)}"), id="topbar")
        with VerticalScroll(classes="body"):
            if self.job.passive and s.action:
                yield Static(plain(s.action + ". Esc aborts it.", style="bold"), id="action")
            yield Static(id="stage", classes="step")
            yield Bar(id="bar")
            yield Static(id="numbers")
            yield Static(id="limit")
            yield Static(id="route")
            yield Static(id="layout")
            yield Label("Throughput, the last minute (a bar each half second)", classes="section")
            yield RateGraph(id="graph")
            yield Label("Where the time goes (how busy each part is)", classes="section")
            yield StageBars(id="stages")
            yield Static(id="warning")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(1.0, self._tick)  # the elapsed time moves even between events

    def _tick(self) -> None:
        self.query_one("#numbers", Static).update(plain("\n".join(self.job.numbers())))

    def refresh_view(self) -> None:
        job = self.job
        self.query_one("#stage", Static).update(plain(job.stage_line()))
        self.query_one("#bar", Bar).set(job.fraction)
        self.query_one("#numbers", Static).update(plain("\n".join(job.numbers())))
        self.query_one("#limit", Static).update(plain(job.limit_text()))
        route = Table.grid(padding=(0, 1))
        route.add_column(style="bold", width=4)
        route.add_column()
        route.add_row("From", plain(job.source))
        route.add_row("To", plain(job.target))
        self.query_one("#route", Static).update(route)
        layout = self.query_one("#layout", Static)
        layout.update(plain("\n".join(job.layout)))
        layout.display = bool(job.layout)  # a fitted clone's layout; nothing for the others
        self.query_one("#graph", RateGraph).set(job.history)
        self.query_one("#stages", StageBars).show(
            stage_names(job.sending_host, job.receiving_host), job.shown_stages(), job.limit_row()
        )
        warning = self.query_one("#warning", Static)
        warning.update(plain(f"Warning: {job.warnings[-1]}") if job.warnings else "")

    def action_abort(self) -> None:
        self.post_message(AbortAsked())
