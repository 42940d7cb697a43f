"""Step 8 and the errors: the summary of a finished clone, or what went wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from recovery import events
from recovery.tui.advice import Advice
from recovery.tui.model import JobView
from recovery.tui.widgets import plain
from recovery.units import human_duration, human_rate, human_size, shown

if TYPE_CHECKING:
    from recovery.tui.app import WizardApp


def facts(rows: list[tuple[str, str]]) -> Table:
    """Label and value rows; long values wrap under their value, not under the label."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", width=7, no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(label, plain(value))
    return table


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else human_duration(seconds)


def summary_rows(job: JobView, s: events.Summary) -> list[tuple[str, str]]:
    level = f"zstd level {job.level}" if job.level.isdigit() else job.level
    rows = [("Source", s.source), ("Target", s.target),
            ("Mode", s.mode + (f"; compression at the end: {level}" if level else ""))]
    if s.role == "sender":
        rows.append(("Bytes", f"read {human_size(s.bytes_read)}, sent on the link {human_size(s.bytes_sent)}"))
    else:
        rows.append(("Bytes", f"received on the link {human_size(s.bytes_sent)}"))
    written = f"written {human_size(s.bytes_written)}"
    rows.append(("", written + (f", zeros {human_size(s.zero_bytes)} (not sent)" if s.zero_bytes else "")))
    copied = job.to_send or s.bytes_read or s.bytes_written + s.zero_bytes
    rate = f" (average {human_rate(copied / s.seconds)})" if s.seconds > 0 and copied else ""
    rows += [("Time", duration(s.seconds) + rate),
             ("Chunks", "BLAKE3 of every chunk, the same on both machines:"), ("", s.list_digest)]
    if s.image_digest:
        rows += [("Image", "BLAKE3 of the whole disk (b3sum of the source gives this):"), ("", s.image_digest)]
    if s.checks:
        names = sorted({c["check"] for c in s.checks})
        rows.append(("Checks", f"on the target: {', '.join(names)}"))
        for c in s.checks:
            if c["ok"] is not True:
                state = "FAILED" if c["ok"] is False else "not run"
                rows.append(("", f"partition {c['number']}: {c['check']} {state}: {c['message']}"))
    return rows


def verdict(s: events.Summary) -> str:
    if s.verified:
        return "Clone complete and verified."
    return "Clone complete, NOT verified (verification was off)."


def next_steps(job: JobView, host: str) -> Text:
    holder = job.started.peer if job.started.role == "sender" else host
    text = Text("What next\n", style="bold")
    text.append(shown(f"- Start {holder} from the new disk and check that your files are there.") + "\n")
    text.append("- Keep the old disk as it is until you are sure.\n")
    text.append("- Enter starts another clone; Ctrl+Q quits.")
    return text


class SummaryScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "again", "Another clone", key_display="Enter")]

    def __init__(self, job: JobView, host: str) -> None:
        super().__init__()
        self.job = job
        self.host = host
        self.demo_check = ""

    def compose(self) -> ComposeResult:
        yield Static("usb4-recovery  ·  Done", id="topbar")
        assert self.job.summary is not None
        summary = self.job.summary
        log = self.job.started.log or "not saved (no writable log folder)"
        with VerticalScroll(classes="result-body"):
            yield Static(verdict(summary), id="verdict")
            yield Static(facts([*summary_rows(self.job, summary), ("Log", log)]), id="summary")
            yield Static(id="demo-check")
            yield Static(next_steps(self.job, self.host), id="next")
        yield Footer()

    def show_demo_check(self, text: str) -> None:
        self.demo_check = text
        check = self.query_one("#demo-check", Static)
        check.update(plain(text))
        check.add_class("shown")

    def action_again(self) -> None:
        cast("WizardApp", self.app).start_over()


class ErrorScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "again", "Start over", key_display="Enter")]

    def __init__(self, advice: Advice, log: str | None = None, peer: str = "") -> None:
        super().__init__()
        self.advice = advice
        self.log_path = log
        self.peer = peer
        self.status = ""

    def compose(self) -> ComposeResult:
        a = self.advice
        yield Static(plain(f"usb4-recovery  ·  {a.title}"), id="topbar", classes="error")
        steps = Table.grid(padding=(0, 1))
        steps.add_column(width=1)
        steps.add_column()
        for step in a.steps:
            steps.add_row("-", plain(step))
        with VerticalScroll(classes="result-body"):
            yield Static("What happened", classes="section")
            yield Static(plain(a.message), id="error-message")
            if a.steps:
                yield Static("What you can do", classes="section")
                yield Static(steps, id="error-steps")
            if self.log_path:
                yield Static(facts([("Log", self.log_path)]), id="error-log")
            yield Static(id="error-status")
        yield Footer()

    def on_mount(self) -> None:
        if self.advice.waiting and not self.status:
            self.status = f"Waiting for {self.peer or 'the other machine'} to return..."
        self.query_one("#error-status", Static).update(plain(self.status))

    def set_status(self, text: str) -> None:
        """A line under the advice (shown once the screen is up, if it is not yet)."""
        self.status = text
        if self.is_mounted:
            self.query_one("#error-status", Static).update(plain(text))

    def action_again(self) -> None:
        cast("WizardApp", self.app).start_over()
