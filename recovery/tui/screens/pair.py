"""Step 2: the peer is found; the user checks that both screens show one pairing code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from recovery.engine.session import PeerLink

if TYPE_CHECKING:
    from recovery.tui.app import WizardApp


@dataclass(frozen=True)
class PeerView:
    hostname: str
    software: str
    link: str  # "tcp", "tbstream", ...
    address: str
    speed: str | None  # as the link reports it, when it does
    code: str
    disks: int
    choice: str | None = None  # why this link (both cable links measured: their rates)

    @classmethod
    def of(cls, link: PeerLink) -> PeerView:
        """What the pairing screen shows; the speed as the bus or the network card reports it."""
        return cls(hostname=link.theirs.host.hostname, software=link.theirs.host.software,
                   link=link.conn.kind, address=link.conn.peer, speed=link.conn.speed(),
                   code=link.pairing_code, disks=len(link.theirs.disks), choice=link.conn.choice)


def spaced(code: str) -> str:
    return " ".join(code)


class PairScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "confirm", "The codes match", key_display="Enter"),
        Binding("escape", "reject", "They differ: disconnect"),
    ]

    def __init__(self, peer: PeerView) -> None:
        super().__init__()
        self.peer = peer

    def compose(self) -> ComposeResult:
        p = self.peer
        yield Static(f"usb4-recovery  ·  Found {p.hostname}", id="topbar")
        facts = Text()
        for label, value in (
            ("Peer", f"{p.hostname} ({p.software})"),
            ("Link", f"{p.link} to {p.address}"),
            ("Speed", p.speed or "not reported by this link (the clone measures it)"),
            *((("Why", p.choice),) if p.choice else ()),
            ("Its disks", str(p.disks)),
        ):
            facts.append(f"{label:<11}", style="bold")
            facts.append(value + "\n")
        with Vertical(id="pair-body"):
            yield Static(facts, id="pair-facts")
            yield Static("Pairing code", id="pair-label")
            yield Static(spaced(p.code), id="pair-code")
            yield Static(
                f"Check that the screen of {p.hostname} shows the same code. Nothing happens on "
                "either machine before you confirm it here (or there).",
                id="pair-help",
            )
        yield Footer()

    def action_confirm(self) -> None:
        cast("WizardApp", self.app).confirm_pairing()

    def action_reject(self) -> None:
        cast("WizardApp", self.app).reject_pairing()
