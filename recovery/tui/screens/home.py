"""Step 1: this machine, its disks, and waiting for the other machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.table import Table
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


def link_rows(report: LinkReport | None, status: dict[str, str]) -> list[tuple[str, str]]:
    """The links block: module state, cable links and hosts, addresses, live status."""
    if report is None:
        return [("Links", "looking at them...")]
    loaded = [name for name, _, on in report.modules if on]
    missing = [name for name, _, on in report.modules if not on]
    parts = ([f"loaded: {', '.join(loaded)}"] if loaded else []) + (
        [f"not loaded: {', '.join(missing)}"] if missing else [])
    rows = [("Modules", "; ".join(parts))]
    rows.append(("On the cable", ", ".join(report.hosts_on_cable) or "nobody yet"))
    labels = {"cable": "Cable", "tcp": "TCP", "connect": "Connecting", "peer": "Last try"}
    for source in (*labels, *sorted(set(status) - set(labels))):
        if source in status:
            value = status[source]
            if source == "tcp" and report.addresses and value.startswith("listening"):
                value += f" on {', '.join(report.addresses)}"
            rows.append((labels.get(source, source), value))
    return rows


def link_table(rows: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", width=12, no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table


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
        self.query_one("#home-links", Static).update(link_table(link_rows(state.links, state.status)))

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
