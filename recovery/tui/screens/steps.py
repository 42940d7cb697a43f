"""Steps 3 to 6: direction, source, target, options and the review.

Each step is pushed over the previous one and dismissed with its answer;
Esc pops back one step, so the user can walk back and change anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from recovery.engine.jobs import describe_info
from recovery.protocol.messages import DiskInfo
from recovery.tui.model import Choice, contents, level_text, short_name, used_bytes
from recovery.tui.widgets import DiskList, PickList, header_text, plain
from recovery.units import human_size, shown


class Step(Screen[object]):
    """A wizard step: a title bar, Esc to go back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.step_title = title

    def top(self) -> Static:
        return Static(plain(f"usb4-recovery  ·  {self.step_title}"), id="topbar")

    def action_back(self) -> None:
        self.app.pop_screen()


class DirectionScreen(Step):
    def __init__(self, host: str, peer: str) -> None:
        super().__init__("Which way?")
        self.host, self.peer = host, peer

    def compose(self) -> ComposeResult:
        yield self.top()
        with Vertical(classes="step-body"):
            yield Label("What do you want to copy?", classes="section")
            yield PickList(
                Option(plain(f"Copy a disk of this machine ({self.host}) to {self.peer}"), id="send"),
                Option(plain(f"Copy a disk of {self.peer} to this machine ({self.host})"), id="receive"),
                id="direction", compact=True,
            )
            yield Static(plain(f"This machine drives the whole clone; {self.peer} shows the same "
                               "progress and can abort it."), classes="help")
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id == "send")


class DiskScreen(Step):
    """Choose one disk; disks that cannot be used are listed, disabled, with the reason."""

    def __init__(self, title: str, help_text: str, disks: Sequence[DiskInfo],
                 refusals: dict[str, str | None]) -> None:
        super().__init__(title)
        self.help_text = help_text
        self.disks = list(disks)
        self.refusals = refusals

    def compose(self) -> ComposeResult:
        yield self.top()
        with Vertical(classes="step-body"):
            yield Static(plain(self.help_text), classes="help")
            yield Static(header_text(), classes="table-header")
            yield DiskList(self.disks, self.refusals, id="disks")
            yield Static(id="disk-detail")
        yield Footer()

    def on_mount(self) -> None:
        usable = [d for d in self.disks if not self.refusals.get(d.path)]
        detail = self.query_one("#disk-detail", Static)
        if not self.disks:
            detail.update("No disks to show.")
        elif not usable:
            detail.update("None of these disks can be used (see the reasons above). Press Esc to go back.")
        self.query_one("#disks", DiskList).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        disk = self.query_one("#disks", DiskList).disk_at(event.option_index)
        if disk is not None:
            self.query_one("#disk-detail", Static).update(plain(f"{describe_info(disk)}\n{contents(disk)}"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        disk = self.query_one("#disks", DiskList).disk_at(event.option_index)
        if disk is not None and not self.refusals.get(disk.path):
            self.dismiss(disk)


class ChoiceList(OptionList):
    """A one-of-several setting: the highlighted line is the value, marked (*)."""

    def __init__(self, values: Sequence[tuple[str, str]], current: str, **kwargs: object) -> None:
        self.values = list(values)
        self.value = current
        super().__init__(*[Option(self._label(k, t), id=k) for k, t in values], compact=True,
                         **kwargs)  # type: ignore[arg-type]

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

    def __init__(self, choice: Choice) -> None:
        super().__init__("How to copy")
        self.choice = choice

    def compose(self) -> ComposeResult:
        c = self.choice
        yield self.top()
        with Vertical(classes="step-body"):
            yield Label("Mode", classes="section")
            yield ChoiceList([("used", "used: only the blocks in use by the filesystems (faster)"),
                              ("exact", "exact: every block; the copy is b3sum-identical")],
                             c.mode, id="mode")
            yield Label("Compression", classes="section")
            yield ChoiceList([("auto", "auto: adapts to the link and the processor"),
                              ("off", "off: send the blocks as they are")],
                             "auto" if c.level is None else "off", id="level")
            yield Label("Verification", classes="section")
            yield ChoiceList([("on", "on: read the target back and compare (recommended)"),
                              ("off", "off: trust the copy")],
                             "on" if c.verify else "off", id="verify")
            yield Static("Arrows choose, Tab moves to the next setting, Enter continues.", classes="help")
        yield Footer()

    def action_next(self) -> None:
        get = lambda name: self.query_one(f"#{name}", ChoiceList).value  # noqa: E731
        self.dismiss(dataclasses.replace(self.choice, mode=get("mode"),
                                         level=None if get("level") == "auto" else 0,
                                         verify=get("verify") == "on"))


def hardware(disk: DiskInfo) -> str:
    return ", ".join(x for x in (disk.model, disk.serial, human_size(disk.size)) if x)


def review_text(choice: Choice, host: str, peer: str) -> Text:
    """Everything that will happen, in order."""
    assert choice.source is not None and choice.target is not None
    src_host, dst_host = (host, peer) if choice.send else (peer, host)
    used = used_bytes(choice.source)
    if choice.mode == "used":
        mode = "used: only the blocks in use" + (f" (about {human_size(used)})" if used is not None else "")
    else:
        mode = f"exact: all {human_size(choice.source.size)}, block for block"
    text = Text()
    for label, value in (
        ("Copy", f"{choice.source.path} of {src_host}"),
        ("", hardware(choice.source)),
        ("Onto", f"{choice.target.path} of {dst_host}"),
        ("", hardware(choice.target)),
        ("Mode", mode),
        ("Compression", level_text(choice.level)),
        ("Verify", verify_text(choice, dst_host)),
    ):
        text.append(f"{label:<12}", style="bold")
        text.append(shown(value) + "\n")
    text.append("\n" + shown(f"Everything on {choice.target.path} of {dst_host} will be destroyed:") + "\n",
                style="bold")
    text.append(shown(f"  {contents(choice.target)}") + "\n")
    return text


def verify_text(choice: Choice, dst_host: str) -> str:
    """The read-back as it will happen: the machine that writes decides for its own disk."""
    if choice.verify:
        return "read the target back and compare"
    if choice.send:
        return f"yes: {dst_host} always reads back what it writes"
    return "no (not recommended)"


class ReviewScreen(Step):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, choice: Choice, host: str, peer: str) -> None:
        super().__init__("Review: nothing has been written yet")
        self.choice = choice
        self.host, self.peer = host, peer
        assert choice.target is not None
        self.word = short_name(choice.target)

    def compose(self) -> ComposeResult:
        yield self.top()
        with Vertical(classes="step-body"):
            yield Static(review_text(self.choice, self.host, self.peer), id="review")
            with Horizontal(id="confirm-row"):
                yield Label(f"Type {self.word} to confirm: ")
                yield Input(id="confirm", compact=True)
            yield Static("Then press Enter to start the clone.", id="confirm-help", classes="help")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#confirm", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.dismiss(True)
        else:
            self.query_one("#confirm-help", Static).update(
                f"That is not {self.word}. Type the target's name exactly, or press Esc to go back.")
