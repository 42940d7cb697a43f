"""After a clone: the summary of one that finished, or what went wrong and what state the target is in.

What the user can do next is a list of offers (a key, its words, the
message it posts): the app decides which apply (retry, another clone, back
to the first screen), and a new kind of offer needs no change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from recovery import events, report
from recovery.tui.advice import Advice
from recovery.tui.job import JobView
from recovery.tui.widgets import facts, plain
from recovery.units import shown


@dataclass(frozen=True)
class Offer:
    """A key on a result screen: what it is called and what it asks the app for."""

    key: str
    label: str
    message: type[Message]


class ResultScreen(Screen[None]):
    """A screen whose keys are the offers it was given, and a status line under it all (how the pairing
    stands: it stays, it ended, this machine's new code)."""

    def __init__(self, offers: Sequence[Offer]) -> None:
        super().__init__()
        self.offers = tuple(offers)
        self.status = ""
        for offer in self.offers:  # keys that depend on the situation: bound per screen
            self._bindings.bind(
                offer.key, f"offer('{offer.key}')", offer.label, key_display="Enter" if offer.key == "enter" else None
            )

    def action_offer(self, key: str) -> None:
        offer = next(o for o in self.offers if o.key == key)
        self.post_message(offer.message())

    def on_mount(self) -> None:
        self._paint_status()

    def set_status(self, text: str) -> None:
        """The status line (shown once the screen is up, if it is not yet)."""
        self.status = text
        if self.is_mounted:
            self._paint_status()

    def _paint_status(self) -> None:
        for widget in self.query(".result-status").results(Static):
            widget.update(plain(self.status))
            widget.set_class(bool(self.status), "shown")


def verdict_kind(s: events.Summary) -> str:
    """The verdict's colour, one meaning each: ``verified`` (green) only for a whole copy checked on the
    target; ``partial`` (amber) for an incomplete source or a copy not read back; ``failed`` (red)."""
    if s.verified is False:
        return "failed"
    return "verified" if s.verified and not s.unreadable else "partial"


def verdict_text(job: JobView) -> Text:
    s = job.summary
    assert s is not None
    text = Text()
    if s.unreadable and s.verified is not False:  # a rescue: what was read may be verified, not all of it
        text.append(" INCOMPLETE SOURCE ", style="bold reverse")
        text.append("  " + shown(report.verdict(s)))
    elif s.verified:
        text.append(" VERIFIED ", style="bold reverse")
        text.append("  the copy was checked on the target itself")
    else:
        text.append(" NOT VERIFIED ", style="bold reverse")
        text.append("  " + shown(report.verdict(s)))
    return text


def next_steps(job: JobView, host: str) -> Text:
    """What to do with the copy, said to this machine (``host``): which machine to start from it."""
    holder = "this machine" if job.receiving_host == host else job.receiving_host
    text = Text("What next\n", style="bold")
    text.append(shown(f"- Start {holder} from the new disk and check that your files are there.") + "\n")
    text.append("- Keep the old disk as it is until you are sure.")
    return text


class SummaryScreen(ResultScreen):
    def __init__(self, job: JobView, host: str, offers: Sequence[Offer]) -> None:
        super().__init__(offers)
        self.job, self.host = job, host
        self.demo_check = ""

    def compose(self) -> ComposeResult:
        summary = self.job.summary
        assert summary is not None
        yield Static(plain(f"usb4-recovery  ·  {report.headline(summary)}"), id="topbar")
        rows: list[tuple[str, str]] = []
        for label, value in report.summary_rows(summary, level=self.job.level):
            if label in ("chunks", "image") and value.startswith("BLAKE3 "):
                digest, _, why = value.removeprefix("BLAKE3 ").partition("  ")
                rows += [(label.capitalize(), f"BLAKE3 {why.strip('()')}:"), ("", digest)]
            elif label != "checked":
                rows.append((label.capitalize(), value))
        checked = report.checked(summary)
        log = self.job.started.log or "not saved (no writable log folder)"
        with VerticalScroll(classes="body"):
            yield Static(verdict_text(self.job), id="verdict", classes=verdict_kind(summary))
            if checked:
                yield Static(
                    facts([("Checked" if i == 0 else "", line) for i, line in enumerate(checked)]), id="checked"
                )
            yield Static(facts([*rows, ("Log", log)]), id="summary")
            yield Static(id="demo-check")
            yield Static(next_steps(self.job, self.host), id="next")
            yield Static(id="summary-status", classes="result-status")
        yield Footer()

    def show_demo_check(self, text: str, *, same: bool) -> None:
        """The demo's own comparison of its two images: green only when they are the same."""
        self.demo_check = text
        check = self.query_one("#demo-check", Static)
        check.update(plain(text))
        check.add_class("shown", "verified" if same else "failed")


class ErrorScreen(ResultScreen):
    def __init__(
        self,
        advice: Advice,
        offers: Sequence[Offer],
        *,
        state: Sequence[str] = (),
        log: str | None = None,
        peer: str = "",
    ) -> None:
        super().__init__(offers)
        self.advice, self.state_lines, self.log_path, self.peer = advice, tuple(state), log, peer

    def compose(self) -> ComposeResult:
        a = self.advice
        yield Static(plain(f"usb4-recovery  ·  {a.title}"), id="topbar", classes="error")
        steps = Table.grid(padding=(0, 1))
        steps.add_column(width=1)
        steps.add_column()
        for step in a.steps:
            steps.add_row("-", plain(step))
        with VerticalScroll(classes="body"):
            yield Static(id="error-status", classes="result-status")  # what now: first, never below the fold
            yield Static("What happened", classes="section")
            yield Static(plain(a.message), id="error-message")
            if self.state_lines:
                yield Static("The disks now", classes="section")
                yield Static(plain("\n".join(self.state_lines)), id="error-state")
            if a.steps:
                yield Static("What you can do", classes="section")
                yield Static(steps, id="error-steps")
            if self.log_path:
                yield Static(facts([("Log", self.log_path)]), id="error-log")
        yield Footer()
