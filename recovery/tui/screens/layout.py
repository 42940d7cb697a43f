"""The new layout (after the options, when the clone shrinks or grows the source to fit its target): each
partition's old and new size and place side by side, and what happens to it, estimated from the disk
list (:mod:`recovery.tui.layout`). Up and Down pick a partition that can be resized, s sets its size
(typed as ``--size`` takes it), c gives it back its automatic size; the layout is planned again at once,
and a size the planner refuses is said in one line and not applied. Enter goes on to the review, Esc back
to the options; a layout the estimate cannot make is shown with why, and only Esc leads on.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Input, Label, Static

from recovery.errors import RecoveryError, RefusedError
from recovery.tui import layout
from recovery.tui.messages import StepChanged
from recovery.tui.model import Choice
from recovery.tui.screens.steps import Step
from recovery.tui.widgets import plain

SIZE_HINT = "a size as 120G, 120GiB or 500M; empty: the automatic size"


def table(rows: list[layout.Row], picked: int | None = None) -> Table:
    """The partitions before and after, side by side; what happens to each under its name, so it wraps
    in the room left at any width (every string a peer's disk names is plain text, never markup); the
    partition ``picked`` to size is marked."""
    grid = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False, expand=True)
    grid.add_column("#", no_wrap=True)
    grid.add_column("Partition", overflow="fold", ratio=1)
    for name in ("Used", "Old", "New"):
        grid.add_column(name, no_wrap=True)
    for r in rows:
        what = Text.assemble(plain(r.name), "\n", plain(r.happens, style="italic"))
        mark = ">" if r.number == picked else " "
        grid.add_row(
            f"{mark}{r.number}",
            what,
            r.used,
            f"{r.size}\nat {r.start}",
            f"{r.new_size}\nat {r.new_start}",
            style="reverse" if r.number == picked else None,
        )
    return grid


class LayoutScreen(Step):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "next", "Continue", key_display="Enter", priority=True),
        Binding("enter", "apply", "Apply the size", key_display="Enter", priority=True),
        Binding("escape", "back", "Back"),  # a class's bindings of a key replace its base class's
        Binding("escape", "cancel", "Cancel", priority=True),
        Binding("up", "pick(-1)", "Partition", key_display="↑↓", priority=True),
        Binding("down", "pick(1)", "Partition", show=False, priority=True),
        Binding("s", "edit", "Resize"),
        Binding("c", "clear", "Automatic size"),
    ]
    step = "layout"

    def __init__(self, choice: Choice, host: str, peer: str) -> None:
        super().__init__("The new layout: nothing written yet")
        assert choice.source is not None
        self.choice = choice
        self.source_host = host if choice.send else peer
        self.refusal = ""
        self.problem = ""  # why the size typed last was not applied
        self.editing = False
        self.found: list[layout.Row] = []
        try:
            self.found = self._rows(choice)
        except RefusedError as e:
            if choice.sizes:  # sized for a layout that no longer fits: the automatic one
                self.choice = dataclasses.replace(choice, sizes={})
                self.problem = f"the sizes chosen before no longer fit ({e.message}): the automatic layout"
                self.found = self._rows(self.choice)
            else:
                self.refusal = e.message + (f" ({e.hint})" if e.hint else "")
        self.sizable = [] if self.refusal else layout.sizable(self.choice)
        self.picked: int | None = (
            next((n for n in self.sizable if n in self.choice.sizes), self.sizable[0]) if self.sizable else None
        )

    @staticmethod
    def _rows(choice: Choice) -> list[layout.Row]:
        assert choice.source is not None
        return layout.rows(layout.estimate(choice), choice.source, choice.sizes)

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
                yield Static(table(self.found, self.picked), id="layout")
                yield Static(plain(self._range_line()), id="layout-range", classes="help")
                with Horizontal(classes="field-row", id="size-row"):
                    yield Label(plain(f"Size of partition {self.picked}: "), id="size-label")
                    yield Input(placeholder=SIZE_HINT, id="size", compact=True, max_length=32)
                yield Static(id="layout-problem", classes="banner")
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

    def on_mount(self) -> None:
        if not self.refusal:
            self._show()

    def _range_line(self) -> str:
        """What the numbers of the partition picked mean."""
        if self.picked is None:
            return "No partition here can be given another size: each keeps what the layout gives it."
        return layout.range_line(self.choice, self.picked)

    def _show(self) -> None:
        """The layout, the partition picked, the field and the last refusal as they are now."""
        self.query_one("#layout", Static).update(table(self.found, self.picked))
        self.query_one("#layout-range", Static).update(plain(self._range_line()))
        self.query_one("#size-row").display = self.editing
        self.query_one("#size-label", Label).update(plain(f"Size of partition {self.picked}: "))
        problem = self.query_one("#layout-problem", Static)
        problem.update(plain(f"Not applied: {self.problem}" if self.problem else ""))
        problem.display = bool(self.problem)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("apply", "cancel"):
            return self.editing
        if action in ("next", "back"):
            return not self.editing and (action == "back" or not self.refusal)
        if action in ("pick", "edit"):
            return not self.editing and len(self.sizable) > (1 if action == "pick" else 0)
        if action == "clear":
            return not self.editing and self.picked in self.choice.sizes
        return True

    def action_next(self) -> None:
        self.answer(dict(self.choice.sizes))

    def highlighted(self) -> object:
        return dict(self.choice.sizes)  # kept when going back to the options

    def action_pick(self, step: int) -> None:
        assert self.picked is not None
        at = self.sizable.index(self.picked)
        self.picked = self.sizable[(at + step) % len(self.sizable)]
        self.problem = ""
        self._show()

    def action_edit(self) -> None:
        self.editing, self.problem = True, ""
        self._show()
        field = self.query_one("#size", Input)
        field.value = ""
        field.focus()

    def action_cancel(self) -> None:
        self.editing, self.problem = False, ""
        self.set_focus(None)
        self._show()

    def action_apply(self) -> None:
        self._resize(self.query_one("#size", Input).value)

    def action_clear(self) -> None:
        self._resize("")

    def _resize(self, typed: str) -> None:
        """Plan the layout with the partition picked sized as ``typed``; a refusal leaves it as it was."""
        assert self.picked is not None
        try:
            choice = layout.with_size(self.choice, self.picked, typed)
            found = self._rows(choice)
        except RecoveryError as e:
            self.problem = e.message
        else:
            self.choice, self.found, self.editing, self.problem = choice, found, False, ""
            self.sizable = layout.sizable(choice)
            if self.picked not in self.sizable:
                self.picked = self.sizable[0] if self.sizable else None
            self.set_focus(None)
            self.post_message(StepChanged(self.step, self.rows))  # the other machine's screen shows it too
        self._show()
