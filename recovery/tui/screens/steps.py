"""Steps 2 to 6: direction, source, target, options and the review.

Each step is built from the answers so far (the earlier answer is
highlighted), posts its answer, and Esc posts :class:`StepBack`: the app
shows the previous step with every answer kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from recovery.engine.peer.jobs import describe_info
from recovery.protocol.messages import DiskInfo
from recovery.tui import flow
from recovery.tui.messages import StepAnswered, StepBack
from recovery.tui.model import Choice, contents, level_text, short_name, systems, used_bytes
from recovery.tui.widgets import DiskList, PickList, columns, header_text, plain
from recovery.units import human_size


class Step(Screen[None]):
    """A wizard step: a title bar, the step line, Esc to go back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]
    step = "pair"

    def __init__(self, title: str) -> None:
        super().__init__()
        self.step_title = title

    def top(self) -> ComposeResult:
        yield Static(plain(f"usb4-recovery  ·  {self.step_title}"), id="topbar")

    def step_line(self) -> Static:
        return Static(flow.label(self.step), classes="step")

    def action_back(self) -> None:
        self.post_message(StepBack(self.step))

    def answer(self, value: object) -> None:
        self.post_message(StepAnswered(self.step, value))


class DirectionScreen(Step):
    step = "direction"

    def __init__(self, host: str, peer: str, send: bool | None) -> None:
        super().__init__("Which way?")
        self.host, self.peer, self.send = host, peer, send

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield PickList(
                Option(plain(f"Copy a disk of this machine ({self.host}) to {self.peer}"), id="send"),
                Option(plain(f"Copy a disk of {self.peer} to this machine ({self.host})"), id="receive"),
                id="direction",
                compact=True,
            )
            yield Static(
                plain(
                    f"Either machine can drive the whole clone; {self.peer} shows the same progress and can abort it."
                ),
                classes="help",
            )
        yield Footer()

    def on_mount(self) -> None:
        picks = self.query_one("#direction", PickList)
        picks.highlighted = 1 if self.send is False else 0
        picks.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.answer(event.option.id == "send")


class DiskScreen(Step):
    """Choose one disk; disks that cannot be used are listed, disabled, with the reason."""

    def __init__(
        self,
        step: str,
        title: str,
        help_text: str,
        disks: Sequence[DiskInfo],
        refusals: dict[str, str | None],
        current: DiskInfo | None = None,
    ) -> None:
        super().__init__(title)
        self.step = step
        self.help_text = help_text
        self.disks = list(disks)
        self.refusals = refusals
        self.current = current

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Static(plain(self.help_text), classes="help")
            cols = columns(self.app.size.width)
            yield Static(header_text(cols), classes="table-header")
            yield DiskList(self.disks, self.refusals, cols=cols, id="disks")
            yield Static(id="disk-detail")
        yield Footer()

    def on_mount(self) -> None:
        usable = [d for d in self.disks if not self.refusals.get(d.path)]
        detail = self.query_one("#disk-detail", Static)
        if not self.disks:
            detail.update("No disks to show.")
        elif not usable:
            detail.update("None of these disks can be used (see the reasons above). Press Esc to go back.")
        disks = self.query_one("#disks", DiskList)
        index = disks.index_of(self.current)
        if index is not None and not self.refusals.get(self.disks[index].path):
            disks.highlighted = index
        disks.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        disk = self.query_one("#disks", DiskList).disk_at(event.option_index)
        if disk is not None:
            found = systems(disk)
            text = f"{describe_info(disk)}\n{contents(disk)}" + (f"\nSystem: {', '.join(found)}" if found else "")
            self.query_one("#disk-detail", Static).update(plain(text))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        disk = self.query_one("#disks", DiskList).disk_at(event.option_index)
        if disk is not None and not self.refusals.get(disk.path):
            self.answer(disk)


class ChoiceList(OptionList):
    """A one-of-several setting: the highlighted line is the value, marked (*)."""

    def __init__(self, values: Sequence[tuple[str, str]], current: str, **kwargs: object) -> None:
        self.values = list(values)
        self.value = current
        super().__init__(*[Option(self._label(k, t), id=k) for k, t in values], compact=True, **kwargs)  # type: ignore[arg-type]

    def _label(self, key: str, text: str) -> str:
        return f"({'*' if key == self.value else ' '}) {text}"

    def on_mount(self) -> None:
        self.highlighted = [k for k, _ in self.values].index(self.value)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.value = event.option.id or self.value
        for i, (key, text) in enumerate(self.values):
            self.replace_option_prompt_at_index(i, self._label(key, text))


class OptionsScreen(Step):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "next", "Continue", key_display="Enter", priority=True)]
    step = "options"

    def __init__(self, choice: Choice) -> None:
        super().__init__("How to copy")
        self.choice = choice

    def compose(self) -> ComposeResult:
        c = self.choice
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Label("Mode", classes="section")
            yield ChoiceList(
                [
                    ("used", "used: only the blocks in use by the filesystems (faster)"),
                    ("exact", "exact: every block; the copy is b3sum-identical"),
                ],
                c.mode,
                id="mode",
            )
            yield Label("Compression", classes="section")
            yield ChoiceList(
                [("auto", "auto: adapts to the link and the processors"), ("off", "off: send the blocks as they are")],
                "auto" if c.level is None else "off",
                id="level",
            )
            yield Label("Verification", classes="section")
            yield ChoiceList(
                [("on", "on: read the target back and check it (recommended)"), ("off", "off: trust the copy")],
                "on" if c.verify else "off",
                id="verify",
            )
            yield Static("Arrows choose, Tab moves to the next setting, Enter continues.", classes="help")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#mode", ChoiceList).focus()

    def action_next(self) -> None:
        def get(name: str) -> str:
            return str(self.query_one(f"#{name}", ChoiceList).value)

        self.answer(
            dataclasses.replace(
                self.choice, mode=get("mode"), level=None if get("level") == "auto" else 0, verify=get("verify") == "on"
            )
        )


def hardware(disk: DiskInfo) -> str:
    return ", ".join(x for x in (disk.model, disk.serial, human_size(disk.size)) if x)


def review_text(choice: Choice, host: str, peer: str) -> Table:
    """Everything that will happen, in order; long values wrap under their value."""
    assert choice.source is not None and choice.target is not None
    src_host, dst_host = (host, peer) if choice.send else (peer, host)
    used = used_bytes(choice.source)
    if choice.mode == "used":
        mode = "used: only the blocks in use" + (f" (about {human_size(used)})" if used is not None else "")
    else:
        mode = f"exact: all {human_size(choice.source.size)}, block for block"
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", width=11, no_wrap=True)
    table.add_column()
    for label, value in (
        ("Copy", f"{choice.source.path} of {src_host} ({hardware(choice.source)})"),
        ("Onto", f"{choice.target.path} of {dst_host} ({hardware(choice.target)})"),
        ("Mode", mode),
        ("Compression", level_text(choice.level)),
        ("Verify", verify_text(choice, dst_host)),
        ("DESTROYS", f"everything on {choice.target.path} of {dst_host}: {contents(choice.target)}"),
    ):
        table.add_row(label, plain(value))
    return table


def verify_text(choice: Choice, dst_host: str) -> str:
    """The read-back as it will happen: the machine that writes decides for its own disk."""
    if choice.verify:
        return "read the target back and check it"
    if choice.send:
        return f"yes: {dst_host} always reads back what it writes"
    return "no (not recommended)"


class ReviewScreen(Step):
    step = "review"

    def __init__(self, choice: Choice, host: str, peer: str, changes: Sequence[str] = ()) -> None:
        super().__init__("Review: nothing has been written yet")
        self.choice = choice
        self.host, self.peer = host, peer
        self.changes = tuple(changes)
        assert choice.target is not None
        self.word = short_name(choice.target)

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Static(review_text(self.choice, self.host, self.peer), id="review")
            if self.changes:
                yield Static(
                    plain(
                        "Since these disks were chosen:\n"
                        + "\n".join(f"- {c}" for c in self.changes)
                        + "\nThe clone uses them as they are now: check, then confirm again."
                    ),
                    id="review-changes",
                    classes="banner",
                )
            with Horizontal(id="confirm-row"):
                yield Label(plain(f"Type {self.word} to confirm: "))
                yield Input(id="confirm", compact=True)
            yield Static("Then press Enter to start the clone.", id="confirm-help", classes="help")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#confirm", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.answer(True)
        else:
            self.query_one("#confirm-help", Static).update(
                plain(f"That is not {self.word}. Type the target's name exactly, or press Esc to go back.")
            )
