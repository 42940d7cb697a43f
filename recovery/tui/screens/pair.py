"""Step 1, paired: who the other machine is, over what, and how safe the link is.

On the machine whose user typed the code (the driver) Enter goes on to the
clone; Esc leaves the pairing (the app asks first). On the other machine (it
served its code) the screen says who drives it and what its user is doing
right now, with the review that user is asked to confirm (what will be
overwritten, how) before anything is written; every clone the driver starts
then shows in plain words, with Esc to abort it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from recovery.tui import flow
from recovery.tui.messages import EndPairingAsked, StepAnswered
from recovery.tui.state import PeerView
from recovery.tui.widgets import facts, plain
from recovery.units import shown

SPEED_PENDING = "asking the link..."  # until a worker has the link's answer
SPEED_UNKNOWN = "not reported by this link (the clone measures it)"


def peer_facts(p: PeerView) -> Text:
    """Label and value lines; every value is plain text (a peer's strings are never markup)."""
    text = Text()
    rows = [
        ("Peer", f"{p.hostname} ({p.software})"),
        ("Machine id", p.machine_id or "not given"),
        ("Link", f"{p.link} to {p.address}"),
        ("Speed", p.speed or (SPEED_PENDING if p.speed_pending else SPEED_UNKNOWN)),
        *((("Why", p.choice),) if p.choice else ()),
        ("Security", p.security),
        ("Session", f"{p.session} (the same on both screens)"),
    ]
    if p.drives:
        rows.append(("Its disks", str(p.disks)))
    for label, value in rows:
        text.append(f"{label:<11}", style="bold")
        text.append(shown(value, lines=True) + "\n")
    return text


class PeerScreen(Screen[None]):
    """A screen with the paired machine's facts; they change once, when the link's speed is known."""

    def __init__(self, peer: PeerView) -> None:
        super().__init__()
        self.peer = peer

    def set_peer(self, peer: PeerView) -> None:
        """Show ``peer`` (now, or when composed)."""
        self.peer = peer
        for widget in self.query("#pair-facts").results(Static):
            widget.update(peer_facts(peer))


class PairScreen(PeerScreen):
    """The driving side: paired; Enter goes on to the clone."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "confirm", "Continue", key_display="Enter"),
        Binding("escape", "leave", "End the pairing"),
    ]

    def compose(self) -> ComposeResult:
        p = self.peer
        yield Static(plain(f"usb4-recovery  ·  Paired with {p.hostname}"), id="topbar")
        with VerticalScroll(classes="body"):
            yield Static(flow.label("pair"), classes="step")
            yield Static(peer_facts(p), id="pair-facts")
            yield Static(
                plain(
                    f"You typed the code shown on {p.hostname}: this machine drives, and "
                    f"{p.hostname} shows every step and can abort a clone. Enter chooses what to "
                    "copy."
                ),
                id="pair-help",
            )
        yield Footer()

    def action_confirm(self) -> None:
        self.post_message(StepAnswered("pair", True))

    def action_leave(self) -> None:
        self.post_message(EndPairingAsked())


class PassiveScreen(PeerScreen):
    """The serving side: the peer typed this machine's code and drives it now."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "End the pairing")]

    def __init__(
        self, peer: PeerView, activity: str = "", last: str = "", review: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(peer)
        self.activity, self.last, self.review = activity, last, tuple(review)

    def compose(self) -> ComposeResult:
        p = self.peer
        yield Static(plain(f"usb4-recovery  ·  Controlled from {p.hostname}"), id="topbar")
        with VerticalScroll(classes="body"):
            yield Static(id="passive-activity", classes="step")
            yield Static(id="passive-review")
            yield Static(
                plain(
                    f"Nothing is written before {p.hostname} confirms, and this machine checks its own "
                    "disk again first. Esc ends the pairing."
                ),
                id="passive-review-note",
                classes="help",
            )
            yield Static(id="passive-last")
            yield Static(peer_facts(p), id="pair-facts")
            yield Static(
                plain(
                    f"{p.hostname} typed the code shown here: it drives now. Every clone it starts "
                    "shows here, with what it reads or overwrites, and Esc aborts it."
                ),
                id="pair-help",
            )
        yield Footer()

    def on_mount(self) -> None:
        self._paint()

    def show(self, activity: str, last: str = "", review: Sequence[tuple[str, str]] = ()) -> None:
        """What the driver's user does now (and the review it is asked to confirm), how the last clone ended."""
        self.activity, self.last, self.review = activity, last or self.last, tuple(review)
        if self.query("#passive-activity"):  # composed: paint now (else on_mount will)
            self._paint()

    def _paint(self) -> None:
        doing = self.activity or "choosing what to copy"
        self.query_one("#passive-activity", Static).update(plain(f"{self.peer.hostname} is {doing}..."))
        review = self.query_one("#passive-review", Static)
        review.update(facts(self.review))  # the peer's words: text, never markup
        for widget in (review, self.query_one("#passive-review-note", Static)):
            widget.display = bool(self.review)
        latest = self.query_one("#passive-last", Static)
        latest.update(plain(f"Last clone: {self.last}") if self.last else "")
        latest.display = bool(self.last)

    def action_leave(self) -> None:
        self.post_message(EndPairingAsked())
