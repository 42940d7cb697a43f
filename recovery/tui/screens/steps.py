"""Steps 2 to 6: direction, source, target, options and the review.

Each step is built from the answers so far (the earlier answer is
highlighted), posts its answer, and Esc posts :class:`StepBack` with what is
highlighted: the app shows the previous step with every answer kept, that
one too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from recovery.engine.peer.jobs import describe_info
from recovery.protocol.limits import MAX_PASSPHRASE_CHARS
from recovery.protocol.messages import DiskInfo
from recovery.tui import flow
from recovery.tui.messages import ImageAsked, StepAnswered, StepBack
from recovery.tui.model import Choice, can_grow, contents, passphrase_asked, short_name, systems, typed_passphrase
from recovery.tui.review import review_rows
from recovery.tui.widgets import DiskList, PickList, columns, facts, header_text, plain
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
        self.post_message(StepBack(self.step, self.highlighted()))

    def highlighted(self) -> object:
        """The answer highlighted now, kept when going back (None: none)."""
        return None

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

    def highlighted(self) -> object:
        index = self.query_one("#direction", PickList).highlighted
        return None if index is None else index == 0


class DiskScreen(Step):
    """Choose one disk; disks that cannot be used are listed, disabled, with the reason. With ``image``
    (the footer's words), i chooses an image file instead: one to restore, or one to save into."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("i", "image", "Image instead")]

    def __init__(
        self,
        step: str,
        title: str,
        help_text: str,
        disks: Sequence[DiskInfo],
        refusals: dict[str, str | None],
        current: DiskInfo | None = None,
        image: str | None = None,
        notes: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.notes = notes or {}
        self.step = step
        self.help_text = help_text
        self.disks = list(disks)
        self.refusals = refusals
        self.current = current
        self.image = image

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.image is not None if action == "image" else True

    def action_image(self) -> None:
        self.post_message(ImageAsked(self.step))

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Static(plain(self.help_text), classes="help")
            if self.image:
                yield Static(plain(f"Or press i: {self.image}."), classes="help", id="image-offer")
            cols = columns(self.app.size.width)
            yield Static(header_text(cols), classes="table-header")
            yield DiskList(self.disks, self.refusals, cols=cols, notes=self.notes, id="disks")
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

    def highlighted(self) -> object:
        disks = self.query_one("#disks", DiskList)
        disk = disks.disk_at(disks.highlighted)
        return disk if disk is not None and not self.refusals.get(disk.path) else None


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

    def __init__(self, choice: Choice, problem: str = "", old_peer: str = "") -> None:
        """``problem``: why the image's passphrase was refused (by the machine that holds the image);
        ``old_peer``: the machine a save's image goes to, when it cannot encrypt it."""
        super().__init__("How to copy")
        self.choice = choice
        self.problem = problem
        self.old_peer = old_peer
        self.asked = passphrase_asked(choice)
        if old_peer and self.asked == "new":
            self.asked = ""

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
            if self.grows:
                assert c.source is not None and c.target is not None
                more = human_size(c.target.size - c.source.size)
                yield Label(f"The larger disk ({more} more)", classes="section")
                yield ChoiceList(
                    [
                        ("keep", "keep the layout: the new space stays free after the last partition"),
                        ("grow", "grow the filesystems to fill it (on a copy: the source is never written)"),
                    ],
                    "grow" if c.grow else "keep",
                    id="fit",
                )
            yield from self.passphrase_fields()
            yield Static("Arrows choose, Tab moves to the next setting, Enter continues.", classes="help")
        yield Footer()

    def passphrase_fields(self) -> ComposeResult:
        """A save: whether to encrypt the image, and its passphrase twice; a restore of an encrypted image:
        its passphrase. Masked; what is typed never leaves this screen but in the choice."""
        if self.old_peer and self.choice.image_target is not None:
            yield Label("Encryption", classes="section")
            yield Static(plain(f"{self.old_peer} cannot encrypt an image: upgrade usb4-recovery there"))
        if not self.asked:
            return
        typed = self.choice.passphrase or ""
        if self.asked == "new":
            yield Label("Encryption", classes="section")
            yield ChoiceList(
                [
                    ("off", "no: whoever has the file can read the disk in it"),
                    ("on", "yes: encrypt the image with a passphrase (AES-256-GCM)"),
                ],
                "on" if self.choice.passphrase else "off",
                id="encrypt",
            )
        else:
            yield Label("The image is encrypted", classes="section")
        with Vertical(id="passphrase-box"):
            with Horizontal(classes="field-row"):
                yield Label("Passphrase: ")
                yield Input(typed, password=True, max_length=MAX_PASSPHRASE_CHARS, id="passphrase", compact=True)
            if self.asked == "new":
                with Horizontal(classes="field-row"):
                    yield Label("The same again: ")
                    yield Input(typed, password=True, max_length=MAX_PASSPHRASE_CHARS, id="again", compact=True)
        yield Static(id="passphrase-help", classes="help")

    def on_mount(self) -> None:
        self.query_one("#mode", ChoiceList).focus()
        if self.asked:
            self._show_box()
            self._say(self.problem)
            if self.problem:
                self.query_one("#passphrase", Input).focus()

    def _encrypt(self) -> bool:
        return self.asked == "image" or (self.asked == "new" and self.query_one("#encrypt", ChoiceList).value == "on")

    def _show_box(self) -> None:
        self.query_one("#passphrase-box").display = self._encrypt()

    def _say(self, text: str) -> None:
        help_line = self.query_one("#passphrase-help", Static)
        help_line.update(plain(text.rstrip(".") + "." if text else ""))  # as said: it may start with a host name
        help_line.display = bool(text)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "encrypt":
            self._show_box()

    def _typed(self) -> tuple[str | None, str | None]:
        """(the passphrase, or why it is not taken); see :func:`~recovery.tui.model.typed_passphrase`."""
        if not self.asked:
            return None, None
        first = self.query_one("#passphrase", Input).value
        again = self.query_one("#again", Input).value if self.asked == "new" else ""
        return typed_passphrase(self.asked, self._encrypt(), first, again)

    def action_next(self) -> None:
        problem = self._typed()[1]
        if problem:
            self._say(problem[0].upper() + problem[1:])
            self.query_one("#passphrase", Input).focus()
            return
        self.answer(self.highlighted())

    def highlighted(self) -> Choice:
        def get(name: str) -> str:
            return str(self.query_one(f"#{name}", ChoiceList).value)

        return dataclasses.replace(
            self.choice,
            mode=get("mode"),
            level=None if get("level") == "auto" else 0,
            verify=get("verify") == "on",
            grow=self.grows and get("fit") == "grow",
            passphrase=self._typed()[0],
        )

    @property
    def grows(self) -> bool:
        """The target is a larger disk whose new space the source's filesystems could fill."""
        c = self.choice
        return c.source is not None and c.target is not None and not c.image_target and can_grow(c.source, c.target)


class ReviewScreen(Step):
    step = "review"

    def __init__(self, choice: Choice, host: str, peer: str, changes: Sequence[str] = ()) -> None:
        super().__init__("Review: nothing has been written yet")
        self.choice = choice
        self.host, self.peer = host, peer
        self.changes = tuple(changes)
        assert choice.target is not None
        self.word = short_name(choice.target)

    @property
    def rows(self) -> list[tuple[str, str]]:
        """What this review says, line by line (the serving machine is shown the same)."""
        return [*review_rows(self.choice, self.host, self.peer), *(("Changed", c) for c in self.changes)]

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Static(facts(review_rows(self.choice, self.host, self.peer)), id="review")
            if self.changes:
                yield Static(facts(self.rows[-len(self.changes) :]), id="review-changes", classes="banner")
            with Horizontal(id="confirm-row"):
                yield Label(plain(f"Type {self.word}, then Enter, to start: "))
                yield Input(id="confirm", compact=True)
            yield Static(id="confirm-help", classes="help")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#confirm-help", Static).display = False
        self.query_one("#confirm", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.answer(True)
        else:
            wrong = self.query_one("#confirm-help", Static)
            wrong.update(plain(f"That is not {self.word}. Type the target's name exactly, or press Esc to go back."))
            wrong.display = True
