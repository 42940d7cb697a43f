"""Step 1: this machine, its pairing code, the other machine's code, this machine's addresses.

Pairing is passkey entry: each machine shows its own code; the user types
the code of the *other* machine on the one they want to drive from (and its
address when the two are not joined by the cable). Seeing and typing the
code is the user's consent: a machine serves only a peer that proved it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from recovery.engine.peer.seen import Seen
from recovery.link.tcp import DEFAULT_PORT
from recovery.tui import flow
from recovery.tui.links import LinkReport
from recovery.tui.messages import DriveAsked, ReloadAsked
from recovery.tui.state import WizardState
from recovery.tui.widgets import DiskTable, plain
from recovery.units import shown

HINT_EVERY = 0.5  # seconds between looks at a hint that may change (the demo's peer's code)
WAITING = (
    "Join the two machines with a USB4 or Thunderbolt cable (or a network) and start usb4-recovery "
    "on the other one too. Then type the other machine's code on the one you want to work from."
)


def link_rows(report: LinkReport | None, status: dict[str, str]) -> list[tuple[str, str]]:
    """The links block: module state, cable links and hosts, live status of each way."""
    if report is None:
        return [("Links", "looking at them...")]
    loaded = [name for name, _, on in report.modules if on]
    missing = [name for name, _, on in report.modules if not on]
    parts = ([f"loaded: {', '.join(loaded)}"] if loaded else []) + (
        [f"not loaded: {', '.join(missing)}"] if missing else []
    )
    rows = [("Modules", "; ".join(parts)), ("On the cable", ", ".join(report.hosts_on_cable) or "nobody yet")]
    labels = {"cable": "Cable", "tcp": "TCP", "connect": "Connecting", "peer": "Last try"}
    for source in (*labels, *sorted(set(status) - set(labels))):
        if source in status:
            rows.append((labels.get(source, source), status[source]))
    return rows


def address_text(listening: tuple[str, int] | None, report: LinkReport | None, listens: bool) -> str:
    """Where the other machine can reach this one: the addresses it really listens on, and the port."""
    if listening is None:
        return (
            "Not listening on the network (--no-listen): type the other machine's address above."
            if not listens
            else "Not listening on the network yet..."
        )
    host, port = listening
    suffix = "" if port == DEFAULT_PORT else f":{port}"
    if host:
        return f"{host}{suffix}   (it listens on this address only)"
    found = report.addresses if report else ()
    if not found:
        return f"no network address yet (no cable or network?); it listens on port {port}"
    listed = ", ".join(f"[{a}]{suffix}" if ":" in a and suffix else f"{a}{suffix}" for a in found[:4])
    return listed + ("" if suffix else f"   (port {port})")


def seen_rows(seen: list[Seen]) -> list[tuple[str, str]]:
    """The machines that reached this one and are not paired yet."""
    rows = []
    for s in seen:
        who = s.hostname or s.peer
        what = {
            "wizard": "the wizard",
            "agent": "recovery agent",
            "sender": "recovery send",
            "receiver": "recovery receive",
        }.get(s.role, "saying hello")
        hint = "type its code above to work from here" if s.drivable else "it must type this machine's code"
        back = {
            True: " - the machine you were paired with",
            False: " - NOT the machine you were paired with",
            None: "",
        }[s.known]
        reached = s.ours and s.link == "tcp"  # this side connected to it, at an address it was given
        way = f"reached at {s.peer}" if reached else f"over {s.link}"
        rows.append(
            (
                "Machine",
                (
                    f"{who} {way} ({what}){back}: {hint}"
                    if s.role
                    else f"{who} ({'this machine connected' if reached else 'it connected'}): {s.state}"
                ),
            )
        )
    return rows


def table(rows: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", width=12, no_wrap=True)
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, plain(shown(value)))  # plain text: a peer's name is never markup, nor an escape
    return grid


def code_text(name: str, code: str, hint: str) -> Text:
    """This machine's name, large, and the code to type on the other one."""
    text = Text()
    text.append("This machine        ", style="bold")
    text.append(f" {shown(name)} ", style="bold reverse")
    text.append("\n")
    text.append("This machine's code ", style="bold")
    text.append(f" {code} ", style="bold reverse")
    text.append("  type it on the other one to work from there")
    if hint:
        text.append("\n" + shown(hint, lines=True), style="italic")
    return text


class HomeScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "code", "Other's code"),
        Binding("a", "address", "Its address"),
        Binding("r", "reload", "Re-read disks"),
        Binding("x", "dismiss_notice", "Dismiss"),
        Binding("escape", "blur", "Leave the field", show=False),
    ]

    def __init__(self, state: WizardState, *, hint: str | Callable[[], str] = "", listens: bool = True) -> None:
        super().__init__()
        self.state, self.hint, self.listens = state, hint, listens

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        with VerticalScroll(id="home-body"):
            yield Static(flow.label("pair"), classes="step")
            yield Static(id="home-retry", classes="banner")
            yield Static(id="home-notice", classes="banner")
            yield Static(id="home-code")
            yield Static(
                "To work from here, type the other machine's code (and its address if the two "
                "are not joined by the cable), then Enter:",
                classes="help",
            )
            with Horizontal(classes="entry"):
                yield Label("Other machine's code ›")
                yield Input(placeholder="NNNN-NNNN", id="code", compact=True)
            with Horizontal(classes="entry"):
                yield Label("Its address ›")
                yield Input(placeholder="only if not on the cable: HOST[:PORT]", id="address", compact=True)
            yield Static(id="home-seen")
            box = Static(id="home-address", classes="address-box")
            box.border_title = "This machine over a network: type on the other one"
            yield box
            yield Label("Disks of this machine", classes="section")
            yield DiskTable(id="home-disks")
            yield Static(WAITING, id="home-waiting", classes="help")
            yield Static(id="home-links")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        if callable(self.hint):
            self.set_interval(HINT_EVERY, self._show_code)

    def _show_code(self) -> None:
        hint = self.hint() if callable(self.hint) else self.hint
        self.query_one("#home-code", Static).update(code_text(self.state.host, self.state.code, hint))

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        state = self.state
        self.query_one("#topbar", Static).update(plain(f"usb4-recovery  ·  This machine: {state.host}"))
        retry = self.query_one("#home-retry", Static)
        retry.display = state.retry is not None and state.pin is not None
        if state.retry is not None and state.pin is not None:
            retry.update(
                plain(
                    f"To retry the clone, pair with {state.pin.hostname} again: type the code it "
                    "shows now. The disks are checked again before anything is written."
                )
            )
        notice = self.query_one("#home-notice", Static)
        notice.display = bool(state.notice)
        notice.update(plain(state.notice))
        self.refresh_bindings()
        self.query_one("#home-disks", DiskTable).show(state.disks)
        self._show_code()
        self.query_one("#home-seen", Static).update(table(seen_rows(state.seen)))
        self.query_one("#home-address", Static).update(plain(address_text(state.listening, state.links, self.listens)))
        self.query_one("#home-links", Static).update(table(link_rows(state.links, state.status)))

    def action_code(self) -> None:
        self.query_one("#code", Input).focus()

    def action_address(self) -> None:
        self.query_one("#address", Input).focus()

    def action_blur(self) -> None:
        self.set_focus(None)

    def action_reload(self) -> None:
        self.post_message(ReloadAsked())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return bool(self.state.notice) if action == "dismiss_notice" else True

    def action_dismiss_notice(self) -> None:
        self.state.notice = ""
        self.refresh_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        code = self.query_one("#code", Input).value
        address = self.query_one("#address", Input).value
        if event.input.id == "address" and not code.strip():
            self.action_code()
            return
        if code.strip():
            self.post_message(DriveAsked(code, address))
            self.query_one("#code", Input).value = ""
            self.set_focus(None)
