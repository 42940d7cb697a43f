"""The new layout (after the options, when the clone shrinks or grows the source to fit its target): each
partition's old and new size and place side by side, and what happens to it, estimated from the disk
list (:mod:`recovery.tui.layout`). Enter goes on to the review, Esc back to the options; a layout the
estimate cannot make is shown with why, and only Esc leads on.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from recovery.errors import RefusedError
from recovery.tui import layout
from recovery.tui.model import Choice
from recovery.tui.screens.steps import Step
from recovery.tui.widgets import plain


def table(rows: list[layout.Row]) -> Table:
    """The partitions before and after, side by side; what happens to each under its name, so it wraps
    in the room left at any width (every string a peer's disk names is plain text, never markup)."""
    grid = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False, expand=True)
    grid.add_column("#", no_wrap=True)
    grid.add_column("Partition", overflow="fold", ratio=1)
    for name in ("Used", "Old", "New"):
        grid.add_column(name, no_wrap=True)
    for r in rows:
        what = Text.assemble(plain(r.name), "\n", plain(r.happens, style="italic"))
        grid.add_row(str(r.number), what, r.used, f"{r.size}\nat {r.start}", f"{r.new_size}\nat {r.new_start}")
    return grid


class LayoutScreen(Step):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "next", "Continue", key_display="Enter", priority=True)]
    step = "layout"

    def __init__(self, choice: Choice, host: str, peer: str) -> None:
        super().__init__("The new layout: nothing written yet")
        assert choice.source is not None
        self.choice = choice
        self.source_host = host if choice.send else peer
        self.refusal = ""
        self.found: list[layout.Row] = []
        try:
            self.found = layout.rows(layout.estimate(choice), choice.source)
        except RefusedError as e:
            self.refusal = e.message + (f" ({e.hint})" if e.hint else "")

    @property
    def rows(self) -> list[tuple[str, str]]:
        """What this step says, line by line (the serving machine is shown the same)."""
        if self.refusal:
            return [("Layout", f"cannot be made: {self.refusal}")]
        said = f"{layout.headline(self.choice)} (an estimate: {self.source_host} measures it exactly first)"
        return [("Layout", said), *layout.lines(self.found)]

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Static(plain(layout.headline(self.choice)), id="layout-headline")
            if self.refusal:
                yield Static(
                    plain(f"This layout cannot be made: {self.refusal}. Esc goes back to choose again."),
                    id="layout-refusal",
                    classes="banner",
                )
            else:
                yield Static(table(self.found), id="layout")
            yield Static(
                plain(
                    "An estimate from the filesystems' used space, as the disk list reports it. Before anything "
                    f"is written, {self.source_host}, which holds the source, measures each filesystem exactly "
                    "and shows the final layout (a target too small after all is refused, saying why). The "
                    "source is never written: its filesystems are resized on a copy-on-write view of it."
                ),
                id="layout-note",
                classes="help",
            )
            if not self.refusal:
                yield Static("Enter goes on to the review; Esc goes back to the options.", classes="help")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not self.refusal if action == "next" else True

    def action_next(self) -> None:
        self.answer(True)
