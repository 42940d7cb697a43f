"""Step 1: this machine, its disks, its pairing code, and the other machine's code.

Pairing is passkey entry: each machine shows its own code; the user types
the code of the *other* machine on the one they want to drive from (and its
address when the two are not joined by the cable). Seeing and typing the
code is the user's consent: a machine serves only a peer that proved it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from recovery.engine.lobby import Seen
from recovery.tui.links import LinkReport
from recovery.tui.widgets import DiskTable
from recovery.units import shown

if TYPE_CHECKING:
    from recovery.tui.app import WizardApp

WAITING = (
    "Join the two machines with a USB4 or Thunderbolt cable (or a network) and start usb4-recovery "
    "on the other one too. Then type the other machine's code on the one you want to work from."
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


def seen_rows(seen: list[Seen]) -> list[tuple[str, str]]:
    """The machines that reached this one and are not paired yet."""
    rows = []
    for s in seen:
        who = s.hostname or s.peer
        what = {"wizard": "the wizard", "agent": "recovery agent", "sender": "recovery send",
                "receiver": "recovery receive"}.get(s.role, "saying hello")
        hint = "type its code above to drive it" if s.drivable else "it must type this machine's code"
        rows.append(("Machine", f"{who} over {s.link} ({what}): {hint}" if s.role else f"{who}: {s.state}"))
    return rows


def table(rows: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", width=12, no_wrap=True)
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, Text(shown(value)))  # plain text: a peer's name is never markup, nor an escape
    return grid


def code_text(code: str, hint: str) -> Text:
    text = Text()
    text.append("This machine's code  ", style="bold")
    text.append(f" {code} ", style="bold reverse")
    text.append("  to work from the other machine, type it there")
    if hint:
        text.append(f"\n{hint}", style="italic")
    return text


class HomeScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "code", "Other's code"),
        Binding("a", "address", "Its address"),
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
            yield Label("Pairing", classes="section")
            yield Static(id="home-code")
            with Horizontal(classes="entry"):
                yield Label("Work from here: the other machine's code ")
                yield Input(placeholder="NNNN-NNNN", id="code", compact=True)
            with Horizontal(classes="entry"):
                yield Label("  and, if it is not on the cable, its address ")
                yield Input(placeholder="HOST[:PORT]", id="address", compact=True)
            yield Static(id="home-seen")
            yield Static(WAITING, id="home-waiting", classes="help")
            yield Static(id="home-links")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        state = self.wizard.state
        self.query_one("#topbar", Static).update(Text(f"usb4-recovery  ·  This machine: {state.host}"))
        self.query_one("#home-disks", DiskTable).show(state.disks)
        self.query_one("#home-code", Static).update(code_text(state.code, self.wizard.config.code_hint))
        self.query_one("#home-seen", Static).update(table(seen_rows(state.seen)))
        self.query_one("#home-links", Static).update(table(link_rows(state.links, state.status)))

    def action_code(self) -> None:
        self.query_one("#code", Input).focus()

    def action_address(self) -> None:
        self.query_one("#address", Input).focus()

    def action_blur(self) -> None:
        self.set_focus(None)

    def action_reload(self) -> None:
        self.wizard.load_inventory()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        code = self.query_one("#code", Input).value
        address = self.query_one("#address", Input).value
        if event.input.id == "address" and not code.strip():
            self.action_code()
            return
        if code.strip():
            self.wizard.drive(code, address)
            self.query_one("#code", Input).value = ""
            self.set_focus(None)
