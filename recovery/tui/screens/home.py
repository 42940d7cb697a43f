"""Step 1: this machine, its disks, and waiting for the other machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from recovery.tui.links import LinkReport
from recovery.tui.widgets import DiskTable

if TYPE_CHECKING:
    from recovery.tui.app import WizardApp

WAITING = (
    "Connect the two machines with a USB4 or Thunderbolt cable, then start usb4-recovery "
    "on the other machine too: it shows this same screen. The two find each other by themselves."
)


def link_text(report: LinkReport | None, status: dict[str, str]) -> Text:
    """The links block: module state, cable hosts, this machine's addresses, live status."""
    text = Text()
    if report is None:
        text.append("Looking at the links...")
        return text
    modules = "  ".join(f"{name} {'loaded' if on else 'not loaded'}" for name, _, on in report.modules)
    text.append("Cable modules  ", style="bold")
    text.append(modules)
    text.append("\nCable links    ", style="bold")
    if report.cable_links:
        text.append(", ".join(report.cable_links))
        if report.hosts_on_cable:
            text.append(f"; on the cable: {', '.join(report.hosts_on_cable)}")
    else:
        text.append("not in this build yet: connect by address (TCP) instead")
    for source in ("tcp", "connect", "peer", *sorted(set(status) - {"tcp", "connect", "peer"})):
        if source in status:
            label = {"tcp": "TCP", "connect": "Connecting", "peer": "Last attempt"}.get(source, source)
            text.append(f"\n{label:<15}", style="bold")
            text.append(status[source])
            if source == "tcp" and report.addresses and status[source].startswith("listening"):
                text.append(f" on {', '.join(report.addresses)}")
    return text


class HomeScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "connect", "Connect by address"),
        Binding("r", "reload", "Re-read disks"),
        Binding("escape", "blur", "Leave the field", show=False),
    ]

    @property
    def wizard(self) -> WizardApp:
        return cast("WizardApp", self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        with VerticalScroll(id="home-body"):
            yield Label("Disks of this machine", classes="section")
            yield DiskTable(id="home-disks")
            yield Label("Waiting for the other machine", classes="section")
            yield Static(WAITING, id="home-waiting")
            yield Static(id="home-links")
        with Horizontal(id="home-connect"):
            yield Label("Connect by address: ")
            yield Input(placeholder="HOST or HOST:PORT, then Enter", id="address", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()

    def on_screen_resume(self) -> None:
        self.refresh_view()
        self.wizard.home_shown()

    def refresh_view(self) -> None:
        state = self.wizard.state
        self.query_one("#topbar", Static).update(f"usb4-recovery  ·  This machine: {state.host}")
        self.query_one("#home-disks", DiskTable).show(state.disks)
        self.query_one("#home-links", Static).update(link_text(state.links, state.status))

    def action_connect(self) -> None:
        self.query_one("#address", Input).focus()

    def action_blur(self) -> None:
        self.set_focus(None)

    def action_reload(self) -> None:
        self.wizard.load_inventory()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.wizard.connect_to(event.value)
            self.set_focus(None)
