"""Step 2: paired. Who the other machine is, over what, and how safe the link is.

On the machine whose user typed the code (the driver) Enter goes on to the
clone. On the other machine (it served its code) the screen says who drives
it now; every clone the driver starts then shows on this screen's successor,
with a key to abort it.
"""

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
from recovery.tui.widgets import plain
from recovery.units import shown

if TYPE_CHECKING:
    from recovery.tui.app import WizardApp


@dataclass(frozen=True)
class PeerView:
    hostname: str
    software: str
    machine_id: str | None
    link: str  # "tcp", "tbstream", ...
    address: str
    speed: str | None  # as the link reports it, when it does
    security: str  # "paired; data encrypted by default on this link", ...
    session: str  # the key fingerprint, the same on both screens
    drives: bool  # this machine drives (its user typed the peer's code)
    disks: int
    choice: str | None = None  # why this link (both cable links measured: their rates)

    @classmethod
    def of(cls, link: PeerLink) -> PeerView:
        """What the pairing screen shows; the speed as the bus or the network card reports it."""
        host = link.peer or link.theirs.host
        return cls(hostname=host.hostname, software=host.software, machine_id=host.machine_id,
                   link=link.conn.kind, address=link.conn.peer, speed=link.conn.speed(), security=link.security,
                   session=link.fingerprint, drives=link.role == "driver", disks=len(link.inventory),
                   choice=link.conn.choice)


def facts(p: PeerView) -> Text:
    """Label and value lines; every value is plain text (a peer's strings are never markup)."""
    text = Text()
    rows = [
        ("Peer", f"{p.hostname} ({p.software})"),
        ("Machine id", p.machine_id or "not given"),
        ("Link", f"{p.link} to {p.address}"),
        ("Speed", p.speed or "not reported by this link (the clone measures it)"),
        *((("Why", p.choice),) if p.choice else ()),
        ("Security", p.security),
        ("Session", f"{p.session} (the same on both screens)"),
    ]
    if p.drives:
        rows.append(("Its disks", str(p.disks)))
    for label, value in rows:
        text.append(f"{label:<11}", style="bold")
        text.append(shown(value) + "\n")
    return text


class PairScreen(Screen[None]):
    """The driving side: paired; Enter goes on to the clone."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "confirm", "Continue", key_display="Enter"),
        Binding("escape", "reject", "End the pairing"),
    ]

    def __init__(self, peer: PeerView) -> None:
        super().__init__()
        self.peer = peer

    def compose(self) -> ComposeResult:
        p = self.peer
        yield Static(Text(f"usb4-recovery  ·  Paired with {shown(p.hostname)}"), id="topbar")
        with Vertical(id="pair-body"):
            yield Static(facts(p), id="pair-facts")
            yield Static(plain(f"You typed the code shown on {p.hostname}: this machine drives, and "
                               f"{p.hostname} shows every step and can abort it. Enter chooses what to copy."),
                         id="pair-help")
        yield Footer()

    def action_confirm(self) -> None:
        cast("WizardApp", self.app).confirm_pairing()

    def action_reject(self) -> None:
        cast("WizardApp", self.app).end_pairing()


class PassiveScreen(Screen[None]):
    """The serving side: the peer typed this machine's code and drives it now."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "reject", "End the pairing")]

    def __init__(self, peer: PeerView) -> None:
        super().__init__()
        self.peer = peer

    def compose(self) -> ComposeResult:
        p = self.peer
        yield Static(Text(f"usb4-recovery  ·  Controlled from {shown(p.hostname)}"), id="topbar")
        with Vertical(id="pair-body"):
            yield Static(facts(p), id="pair-facts")
            yield Static(plain(f"{p.hostname} typed the code shown here: it drives now. It is choosing what "
                              "to copy; every clone it starts shows here, with what it reads or overwrites, "
                              "and Esc aborts it."), id="pair-help")
        yield Footer()

    def action_reject(self) -> None:
        cast("WizardApp", self.app).end_pairing()
